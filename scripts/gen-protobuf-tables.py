#!/usr/bin/env python3
"""Generate the field tables kubevirt-local uses to decode Kubernetes protobuf request bodies.

Usage: scripts/gen-protobuf-tables.py [--out FILE] [--check]

kubectl's typed clients (`kubectl create deployment|job|service|role|...`) send built-in objects as
Kubernetes protobuf (`k8s\\0` + runtime.Unknown). The API server keeps objects as JSON, so it walks
the message with a table per message type: field number -> JSON name, wire type, nested message.

Inputs (both are crates.io packages in the local cargo registry, never copied into this repository):
- `k8s-pb` (prost code generated from Kubernetes' `generated.proto` files): field numbers, scalar
  types, repeated/map cardinality and nested message types;
- `k8s-openapi` (serde code generated from Kubernetes' OpenAPI): the JSON name of each field. The
  proto field name *is* the JSON name, but prost turns it into snake_case (`clusterIPs` ->
  `cluster_i_ps`), so the two are matched on the name lower-cased without underscores.
Fetch them once with `cargo info k8s-pb@0.9.0` (k8s-openapi is a workspace dependency).

Messages whose JSON form is not an object (Time, MicroTime, Duration, Quantity, IntOrString,
RawExtension, FieldsV1, apiextensions JSON) are marked special and converted by the decoder.

Go encodes every non-pointer scalar field even when it is zero, and the JSON form omits the zero value
(`omitempty`); the decoder therefore drops zero scalars, except for the pointer fields in KEEP_ZERO
whose zero means something different from "unset" (e.g. `replicas: 0`). Go structs embedded inline in
the JSON form (`Volume`'s `VolumeSource`) are fields in protobuf: they are marked INLINE and merged.

`--check` regenerates in memory and exits 1 if the committed output differs.
"""

import argparse
import glob
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "kubevirt-local/src/semantics/protobuf/tables.rs")
REGISTRY = os.path.expanduser("~/.cargo/registry/src")
PB_VERSION = "0.9.0"
OPENAPI_VERSION = "0.29.0"
OPENAPI_FEATURE = "v1_37"

# k8s-pb module (under src/) -> apiVersion of the kinds it holds. Only GA versions are served.
PACKAGES = {
    "api/core/v1": "v1",
    "api/apps/v1": "apps/v1",
    "api/batch/v1": "batch/v1",
    "api/rbac/v1": "rbac.authorization.k8s.io/v1",
    "api/networking/v1": "networking.k8s.io/v1",
    "api/policy/v1": "policy/v1",
    "api/scheduling/v1": "scheduling.k8s.io/v1",
    "api/coordination/v1": "coordination.k8s.io/v1",
    "api/events/v1": "events.k8s.io/v1",
    "api/autoscaling/v1": "autoscaling/v1",
    "api/autoscaling/v2": "autoscaling/v2",
    "api/authentication/v1": "authentication.k8s.io/v1",
    "api/authorization/v1": "authorization.k8s.io/v1",
    "api/discovery/v1": "discovery.k8s.io/v1",
    "api/storage/v1": "storage.k8s.io/v1",
    "api/node/v1": "node.k8s.io/v1",
    "api/certificates/v1": "certificates.k8s.io/v1",
    "api/admissionregistration/v1": "admissionregistration.k8s.io/v1",
    "apiextensions_apiserver/pkg/apis/apiextensions/v1": "apiextensions.k8s.io/v1",
}

# Kinds that are not objects of their own (sent only inside others, or subresource bodies we
# route elsewhere) still get a table: a TokenRequest or Binding body is a top-level message.
EXTRA_ROOTS = {("api/core/v1", "Binding"), ("api/authentication/v1", "TokenRequest")}

SPECIAL = {
    "apimachinery/pkg/apis/meta/v1.Time": "Time",
    "apimachinery/pkg/apis/meta/v1.MicroTime": "MicroTime",
    "apimachinery/pkg/apis/meta/v1.Duration": "Duration",
    "apimachinery/pkg/apis/meta/v1.FieldsV1": "Raw",
    "apimachinery/pkg/api/resource.Quantity": "Quantity",
    "apimachinery/pkg/util/intstr.IntOrString": "IntOrString",
    "apimachinery/pkg/runtime.RawExtension": "Raw",
    "apiextensions_apiserver/pkg/apis/apiextensions/v1.JSON": "Raw",
}

# Pointer fields (Go `*int32`, `*bool`, ...) whose zero value differs from leaving them unset.
KEEP_ZERO = {
    "replicas", "parallelism", "completions", "backoffLimit", "backoffLimitPerIndex",
    "maxFailedIndexes", "activeDeadlineSeconds", "ttlSecondsAfterFinished", "suspend",
    "startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit",
    "revisionHistoryLimit", "progressDeadlineSeconds", "terminationGracePeriodSeconds",
    "runAsUser", "runAsGroup", "fsGroup", "runAsNonRoot", "privileged", "readOnlyRootFilesystem",
    "allowPrivilegeEscalation", "automountServiceAccountToken", "immutable", "priority",
    "expirationSeconds", "enableServiceLinks", "shareProcessNamespace", "hostUsers",
    "allocateLoadBalancerNodePorts", "optional", "defaultMode", "mode",
    "gracePeriodSeconds", "deletionGracePeriodSeconds", "preemptionPolicy", "value",
    "leaseDurationSeconds", "leaseTransitions", "ready", "serving", "terminating",
}

SCALARS = {"string": "Str", "int32": "I32", "int64": "I64", "bool": "Bool", "double": "F64"}


def crate_dir(name):
    dirs = sorted(glob.glob(os.path.join(REGISTRY, "*", name)))
    if not dirs:
        sys.exit(f"{name} is not in {REGISTRY}; fetch it first (see this script's docstring)")
    return dirs[0]


def json_names():
    """(module, Struct) -> {normalized: jsonName} from k8s-openapi's serde code."""
    base = os.path.join(crate_dir(f"k8s-openapi-{OPENAPI_VERSION}"), "src", OPENAPI_FEATURE)
    names, fallback = {}, {}
    for path in glob.glob(os.path.join(base, "**", "*.rs"), recursive=True):
        module = os.path.relpath(os.path.dirname(path), base)
        text = open(path).read()
        structs = re.findall(r"^pub struct (\w+)", text, re.M)
        pairs = re.findall(r'"([^"]+)" => Field::Key_(\w+),', text)
        if len(structs) != 1:
            continue
        table = names.setdefault((module, structs[0]), {})
        for json_name, _ in pairs:
            key = json_name.lower().replace("_", "").replace("-", "").replace("$", "")
            table[key] = json_name
            fallback.setdefault(key, json_name)
    return names, fallback


FIELD_RE = re.compile(r"#\[prost\((.*)\)\]")
DECL_RE = re.compile(r"pub (r#)?(\w+): (.*),$")


def resolve(module, rust_type):
    """A prost Rust type path -> 'module.Message'."""
    path = rust_type
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
        while path.startswith(wrapper):
            path = path[len(wrapper):-1]
    parts = path.split("::")
    here = module.split("/")
    while parts and parts[0] == "super":
        parts.pop(0)
        here.pop()
    return "/".join(here + parts[:-1]) + "." + parts[-1]


def parse_pb():
    """'module.Message' -> [(number, snake_name, kind, repeated, target)] from k8s-pb's sources."""
    base = os.path.join(crate_dir(f"k8s-pb-{PB_VERSION}"), "src")
    messages = {}
    for path in glob.glob(os.path.join(base, "**", "mod.rs"), recursive=True):
        module = os.path.relpath(os.path.dirname(path), base)
        current, attr, pending = None, None, ""
        for line in open(path):
            line = line.strip()
            if line.startswith(("pub struct", "pub enum", "pub mod")) or line == "}":
                attr, pending = None, ""
            elif pending or (attr and line.startswith("pub ")):
                # A declaration may span lines (`BTreeMap<\n String,\n Quantity,\n>`).
                pending += " " + line if pending else line
                if pending.count("<") != pending.count(">") or not pending.endswith(","):
                    continue
                line = re.sub(r"<\s+", "<", re.sub(r",?\s*>", ">", pending))
                line, pending = re.sub(r":\s+", ": ", line, count=1), ""
            m = re.match(r"pub struct (\w+) \{", line)
            if m:
                current = f"{module}.{m.group(1)}"
                messages[current] = []
                continue
            if line == "}":
                current = None
                continue
            m = FIELD_RE.match(line)
            if m and current:
                attr = m.group(1)
                continue
            m = DECL_RE.match(line)
            if m and current and attr:
                name, rust_type = m.group(2), m.group(3)
                number = int(re.search(r'tag = "(\d+)"', attr).group(1))
                repeated = "repeated" in attr
                if attr.startswith("btree_map"):
                    value = re.search(r'btree_map = "string, (\w+)"', attr).group(1)
                    target = None
                    if value == "message":
                        inner = rust_type.split(",", 1)[1].strip()[:-1]
                        target = resolve(module, inner)
                    messages[current].append((number, name, "map:" + value, False, target))
                else:
                    kind = attr.split(",", 1)[0].split(" ")[0]
                    target = resolve(module, rust_type) if kind == "message" else None
                    messages[current].append((number, name, kind, repeated, target))
                attr = None
    return messages


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()

    messages = parse_pb()
    names, fallback = json_names()

    roots = []
    for module, api_version in PACKAGES.items():
        for full, fields in sorted(messages.items()):
            mod, name = full.split(".")
            if mod != module:
                continue
            meta = any(f[1] == "metadata" and f[4] and f[4].endswith(".ObjectMeta") for f in fields)
            if (meta and not name.endswith("List")) or (module, name) in EXTRA_ROOTS:
                roots.append((api_version, name, full))

    # The closure of messages the roots reach, in a stable order.
    order, seen, todo = [], set(), [r[2] for r in roots]
    while todo:
        full = todo.pop(0)
        if full in seen or full in SPECIAL:
            continue
        seen.add(full)
        order.append(full)
        for f in messages[full]:
            if f[4] and f[4] not in seen:
                todo.append(f[4])
    index = {full: i for i, full in enumerate(order)}

    def ty(kind, target):
        if kind == "message":
            return f"Ty::{SPECIAL[target]}" if target in SPECIAL else f"Ty::Msg({index[target]})"
        if kind == "bytes":
            return "Ty::Bytes"
        return f"Ty::{SCALARS[kind]}"

    def json_name(full, snake):
        module, struct = full.split(".")
        key = snake.replace("_", "").lower()
        table = names.get((module, struct), {})
        if key in table:
            return table[key]
        if key in fallback:
            return fallback[key]
        head, *rest = snake.split("_")
        return head + "".join(p.capitalize() for p in rest)

    def inline(full, snake, kind, target):
        """A Go struct embedded with `json:",inline"` (Volume.volumeSource, Probe.handler):
        a message field the JSON form does not name, whose own fields it does."""
        module, struct = full.split(".")
        table = names.get((module, struct))
        if kind != "message" or not table or snake.replace("_", "").lower() in table:
            return False
        inner = [f[1].replace("_", "").lower() for f in messages.get(target, [])]
        return bool(inner) and all(k in table for k in inner)

    out = [
        "// @generated by scripts/gen-protobuf-tables.py from k8s-pb "
        f"{PB_VERSION} (Kubernetes' generated.proto) and k8s-openapi {OPENAPI_VERSION} (JSON names).",
        "// Do not edit by hand; rerun the script.",
        "",
        "use super::{Field, Message, Ty};",
        "",
        "/// Every message reachable from a served kind, indexed by `Ty::Msg`.",
        "pub(super) static MESSAGES: &[Message] = &[",
    ]
    for i, full in enumerate(order):
        out.append(f"    // {i}")
        out.append(f'    Message {{ name: "{full}", fields: &[')
        for number, snake, kind, repeated, target in sorted(messages[full]):
            name = json_name(full, snake)
            if kind.startswith("map:"):
                value = kind[4:]
                inner = {"string": "Ty::Str", "bytes": "Ty::Bytes"}.get(value) or ty(value, target)
                t = f"Ty::Map(&{inner})"
                flags = "Field::ONE"
            elif inline(full, snake, kind, target):
                t, flags = ty(kind, target), "Field::INLINE"
            else:
                t = ty(kind, target)
                flags = "Field::REPEATED" if repeated else (
                    "Field::KEEP_ZERO" if name in KEEP_ZERO and kind != "string" else "Field::ONE")
            out.append(f'        Field::new({number}, "{name}", {t}, {flags}),')
        out.append("    ] },")
    out.append("];")
    out.append("")
    out.append("/// (apiVersion, kind) -> index of the kind's message in [`MESSAGES`], sorted.")
    out.append("pub(super) static KINDS: &[(&str, &str, u16)] = &[")
    for api_version, name, full in sorted(roots):
        out.append(f'    ("{api_version}", "{name}", {index[full]}),')
    out.append("];")
    text = "\n".join(out) + "\n"

    if args.check:
        current = open(args.out).read() if os.path.exists(args.out) else ""
        if current != text:
            sys.exit(f"{args.out} is out of date: rerun scripts/gen-protobuf-tables.py")
        return
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"{args.out}: {len(order)} messages, {len(roots)} kinds")


if __name__ == "__main__":
    main()
