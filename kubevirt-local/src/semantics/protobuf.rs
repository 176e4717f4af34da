//! Kubernetes protobuf request bodies for the simple built-in kinds that kubectl's typed
//! generators send (`kubectl create namespace|configmap|secret|serviceaccount`).
//!
//! A body is `k8s\0` followed by a `runtime.Unknown` (`typeMeta` = 1, `raw` = 2) whose `raw` is the
//! object's message. Each supported kind's message is decoded with its field numbers from
//! Kubernetes' `generated.proto`; other kinds are refused so the client can send JSON instead.

use base64::Engine;
use serde_json::{Map, Value, json};
use thiserror::Error;

/// Why a protobuf body was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtobufError {
    /// Not a well-formed Kubernetes protobuf body.
    #[error("malformed protobuf body: {0}")]
    Malformed(&'static str),
    /// A kind this server does not decode from protobuf.
    #[error(
        "protobuf bodies are decoded for Namespace, ConfigMap, Secret and ServiceAccount only, not {0}; send JSON (kubectl apply -f)"
    )]
    Unsupported(String),
}

/// The magic prefix of a Kubernetes protobuf body.
pub const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    Bytes,
    Time,
    Msg(&'static [Field]),
    MapStr,
    MapBytes,
    RepStr,
    RepMsg(&'static [Field]),
}

type Field = (u64, &'static str, Ty);

const OWNER_REF: &[Field] = &[
    (1, "kind", Ty::Str),
    (3, "name", Ty::Str),
    (4, "uid", Ty::Str),
    (5, "apiVersion", Ty::Str),
    (6, "controller", Ty::Bool),
    (7, "blockOwnerDeletion", Ty::Bool),
];
const OBJECT_META: &[Field] = &[
    (1, "name", Ty::Str),
    (2, "generateName", Ty::Str),
    (3, "namespace", Ty::Str),
    (5, "uid", Ty::Str),
    (6, "resourceVersion", Ty::Str),
    (7, "generation", Ty::Int),
    (8, "creationTimestamp", Ty::Time),
    (10, "deletionGracePeriodSeconds", Ty::Int),
    (11, "labels", Ty::MapStr),
    (12, "annotations", Ty::MapStr),
    (13, "ownerReferences", Ty::RepMsg(OWNER_REF)),
    (14, "finalizers", Ty::RepStr),
];
const OBJECT_REF: &[Field] = &[
    (1, "kind", Ty::Str),
    (2, "namespace", Ty::Str),
    (3, "name", Ty::Str),
    (4, "uid", Ty::Str),
    (5, "apiVersion", Ty::Str),
];
const LOCAL_REF: &[Field] = &[(1, "name", Ty::Str)];
const NAMESPACE_SPEC: &[Field] = &[(1, "finalizers", Ty::RepStr)];
const NAMESPACE: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "spec", Ty::Msg(NAMESPACE_SPEC)),
];
const CONFIG_MAP: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "data", Ty::MapStr),
    (3, "binaryData", Ty::MapBytes),
    (4, "immutable", Ty::Bool),
];
const SECRET: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "data", Ty::MapBytes),
    (3, "type", Ty::Str),
    (4, "stringData", Ty::MapStr),
    (5, "immutable", Ty::Bool),
];
const SERVICE_ACCOUNT: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "secrets", Ty::RepMsg(OBJECT_REF)),
    (3, "imagePullSecrets", Ty::RepMsg(LOCAL_REF)),
    (4, "automountServiceAccountToken", Ty::Bool),
];

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self
                .0
                .split_first()
                .ok_or(ProtobufError::Malformed("truncated varint"))?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtobufError::Malformed("varint too long"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], ProtobufError> {
        let len =
            usize::try_from(self.varint()?).map_err(|_| ProtobufError::Malformed("length"))?;
        if len > self.0.len() {
            return Err(ProtobufError::Malformed("length past the end"));
        }
        let (b, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(b)
    }

    /// The next field: (number, wire type, varint value or bytes).
    fn field(&mut self) -> Result<(u64, Wire<'a>), ProtobufError> {
        let tag = self.varint()?;
        let wire = match tag & 7 {
            0 => Wire::Varint(self.varint()?),
            2 => Wire::Bytes(self.bytes()?),
            1 => {
                self.take(8)?;
                Wire::Fixed
            }
            5 => {
                self.take(4)?;
                Wire::Fixed
            }
            _ => return Err(ProtobufError::Malformed("unsupported wire type")),
        };
        Ok((tag >> 3, wire))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        if n > self.0.len() {
            return Err(ProtobufError::Malformed("fixed field past the end"));
        }
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(b)
    }
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A 32- or 64-bit field (no supported field uses one; it is skipped).
    Fixed,
}

fn text(b: &[u8]) -> Result<String, ProtobufError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtobufError::Malformed("string is not UTF-8"))
}

fn message(bytes: &[u8], schema: &[Field]) -> Result<Value, ProtobufError> {
    let mut out = Map::new();
    let mut r = Reader(bytes);
    while !r.0.is_empty() {
        let (num, wire) = r.field()?;
        let Some(&(_, name, ty)) = schema.iter().find(|(n, _, _)| *n == num) else {
            continue;
        };
        let name = name.to_string();
        match (ty, wire) {
            (Ty::Str, Wire::Bytes(b)) => {
                out.insert(name, json!(text(b)?));
            }
            (Ty::Int, Wire::Varint(v)) => {
                out.insert(name, json!(v as i64));
            }
            (Ty::Bool, Wire::Varint(v)) => {
                out.insert(name, json!(v != 0));
            }
            (Ty::Bytes, Wire::Bytes(b)) => {
                out.insert(
                    name,
                    json!(base64::engine::general_purpose::STANDARD.encode(b)),
                );
            }
            (Ty::Time, Wire::Bytes(b)) => {
                let t = message(b, &[(1, "seconds", Ty::Int)])?;
                let secs = t["seconds"].as_i64().unwrap_or(0);
                if let Ok(ts) = jiff::Timestamp::from_second(secs) {
                    out.insert(name, json!(ts.to_string()));
                }
            }
            (Ty::Msg(s), Wire::Bytes(b)) => {
                out.insert(name, message(b, s)?);
            }
            (Ty::RepStr, Wire::Bytes(b)) => push(&mut out, name, json!(text(b)?)),
            (Ty::RepMsg(s), Wire::Bytes(b)) => push(&mut out, name, message(b, s)?),
            (Ty::MapStr | Ty::MapBytes, Wire::Bytes(b)) => {
                let vt = if matches!(ty, Ty::MapStr) {
                    Ty::Str
                } else {
                    Ty::Bytes
                };
                let entry = message(b, &[(1, "k", Ty::Str), (2, "v", vt)])?;
                let key = entry["k"].as_str().unwrap_or_default().to_string();
                let value = entry.get("v").cloned().unwrap_or_else(|| json!(""));
                let map = out.entry(name).or_insert_with(|| json!({}));
                if let Some(m) = map.as_object_mut() {
                    m.insert(key, value);
                }
            }
            _ => {
                return Err(ProtobufError::Malformed(
                    "field has an unexpected wire type",
                ));
            }
        }
    }
    Ok(Value::Object(out))
}

fn push(out: &mut Map<String, Value>, name: String, v: Value) {
    if let Some(list) = out.entry(name).or_insert_with(|| json!([])).as_array_mut() {
        list.push(v);
    }
}

/// Decode a protobuf body (with its magic prefix) into the object's JSON form.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let body = body
        .strip_prefix(MAGIC)
        .ok_or(ProtobufError::Malformed("missing k8s magic"))?;
    let unknown = message(
        body,
        &[
            (
                1,
                "typeMeta",
                Ty::Msg(&[(1, "apiVersion", Ty::Str), (2, "kind", Ty::Str)]),
            ),
            (2, "raw", Ty::Bytes),
        ],
    )?;
    let kind = unknown
        .pointer("/typeMeta/kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api_version = unknown
        .pointer("/typeMeta/apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let raw = unknown["raw"].as_str().unwrap_or_default();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|_| ProtobufError::Malformed("raw"))?;
    let schema = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        _ => return Err(ProtobufError::Unsupported(format!("{api_version} {kind}"))),
    };
    let mut obj = message(&raw, schema)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn field(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((num << 3) | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_config_map() {
        let meta = [
            field(1, b"cm"),
            field(11, &[field(1, b"app"), field(2, b"web")].concat()),
        ]
        .concat();
        let raw = [
            field(1, &meta),
            field(2, &[field(1, b"k"), field(2, b"v")].concat()),
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [MAGIC, &field(1, &type_meta), &field(2, &raw)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "labels": {"app": "web"}}, "data": {"k": "v"}})
        );
    }

    #[test]
    fn other_kinds_are_refused_by_name() {
        let type_meta = [field(1, b"v1"), field(2, b"Pod")].concat();
        let body = [MAGIC, &field(1, &type_meta)].concat();
        assert_eq!(
            decode(&body),
            Err(ProtobufError::Unsupported("v1 Pod".into()))
        );
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&[MAGIC, bytes.as_slice()].concat());
        }
    }
}
