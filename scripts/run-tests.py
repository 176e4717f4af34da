#!/usr/bin/env python3
"""Runs the workspace's test binaries side by side, as `cargo test --workspace` would one by one.

Most of the suite's time is waiting (nodes starting, pods, controllers, kubectl): a node test
uses a tenth of a core. So the binaries run `--jobs` at a time (default 3); the node tests take
a slot each (kubevirt-local/tests/common/slot.rs: their own bridge and pod network), and a
binary whose source says `require_node!` counts against `--node-jobs` (default: the slots).
Every binary runs in its package's directory with cargo's variables, as `cargo test` runs it;
its output is printed whole when it fails (and with --verbose). The doc tests run through cargo
first. Exits non-zero if any test failed.

    scripts/run-tests.py [--jobs N] [--verbose] [--beside CMD] [-- TEST-ARGS...]

--beside CMD runs the shell command CMD while the test binaries run (its output is printed when
it ends; its failure fails the run): CPU-heavy work in another target directory, such as the
fuzzing, fills the cores the waiting tests leave idle.

The longest binaries start first, so that no long one starts last: each run records how long
every binary took in <target>/run-tests-durations.json and the next run orders by it; binaries
it does not know (a fresh machine) come by scripts/test-durations.json, a record committed as
a seed, then node tests before the rest. The binaries the tests run (kubevirt-controller,
virtctl, kubevirt-launcher) are built here with the tests, once; KUBEVIRT_TEST_BINARIES_BUILT
tells the tests to take them as they are (kubevirt-testsupport's `binaries`).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT = re.compile(
    r"test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored; (\d+) measured"
)


def build(cargo_args):
    """Builds every test binary; their descriptions from cargo's JSON messages."""
    cmd = ["cargo", "test", "--workspace", "--locked", "--no-run",
           "--message-format=json-render-diagnostics"] + cargo_args
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    found = []
    for line in proc.stdout:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg["profile"]["test"]:
            continue
        target = msg["target"]
        manifest = Path(msg["manifest_path"])
        src = Path(target["src_path"])
        try:
            text = src.read_text()
        except OSError:
            text = ""
        found.append({
            "exe": msg["executable"],
            "package": msg["package_id"],
            "name": f"{manifest.parent.relative_to(ROOT) if manifest.parent != ROOT else '.'}"
                    f" {target['kind'][0]} {target['name']}",
            "cwd": str(manifest.parent),
            "node": "require_node!" in text,
        })
    if proc.wait() != 0:
        sys.exit(f"run-tests: building the tests failed (cargo exited {proc.returncode})")
    return found


SEED_DURATIONS = ROOT / "scripts" / "test-durations.json"


def durations_file():
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "run-tests-durations.json"


def known_durations():
    """Seconds per binary name: the committed seed, overridden by this target's last runs."""
    found = {}
    for path in (SEED_DURATIONS, durations_file()):
        try:
            found.update({k: float(v) for k, v in json.loads(path.read_text()).items()})
        except (OSError, ValueError, AttributeError):
            pass
    return found


def record_durations(measured):
    """Adds this run's durations to the target directory's record."""
    path = durations_file()
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    if not isinstance(old, dict):
        old = {}
    old.update({k: round(v, 1) for k, v in measured.items()})
    try:
        path.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
    except OSError as e:
        print(f"run-tests: cannot record durations in {path}: {e}", file=sys.stderr)


def package_env(manifest_dir):
    """The variables cargo sets for a test it runs (those a test may read at run time)."""
    meta = subprocess.run(
        ["cargo", "read-manifest"], cwd=manifest_dir, capture_output=True, text=True
    )
    env = dict(os.environ, CARGO_MANIFEST_DIR=manifest_dir)
    try:
        m = json.loads(meta.stdout)
        env["CARGO_PKG_NAME"] = m["name"]
        env["CARGO_PKG_VERSION"] = m["version"]
    except (ValueError, KeyError):
        pass
    return env


class Runner:
    def __init__(self, tests, jobs, node_jobs, test_args, verbose):
        self.queue = tests
        self.jobs = jobs
        self.node_jobs = node_jobs
        self.test_args = test_args
        self.verbose = verbose
        self.lock = threading.Condition()
        self.running_node = 0
        self.failed = []
        self.totals = [0, 0, 0]  # passed, failed, ignored
        self.envs = {}
        self.durations = {}

    def take(self):
        """The next binary this worker may start, or None when all are taken."""
        with self.lock:
            while True:
                if not self.queue:
                    return None
                for i, t in enumerate(self.queue):
                    if not t["node"] or self.running_node < self.node_jobs:
                        self.queue.pop(i)
                        self.running_node += t["node"]
                        return t
                self.lock.wait()

    def done(self, t):
        with self.lock:
            self.running_node -= t["node"]
            self.lock.notify_all()

    def run_one(self, t):
        if t["cwd"] not in self.envs:
            self.envs[t["cwd"]] = package_env(t["cwd"])
        start = time.monotonic()
        proc = subprocess.run(
            [t["exe"]] + self.test_args, cwd=t["cwd"], env=self.envs[t["cwd"]],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        secs = time.monotonic() - start
        out = proc.stdout.decode(errors="replace")
        counts = [0, 0, 0]
        for m in RESULT.finditer(out):
            counts[0] += int(m.group(2))
            counts[1] += int(m.group(3))
            counts[2] += int(m.group(4))
        ok = proc.returncode == 0
        with self.lock:
            self.durations[t["name"]] = secs
            for i in range(3):
                self.totals[i] += counts[i]
            status = "ok  " if ok else "FAIL"
            print(f"{status} {secs:7.1f}s  {t['name']}  ({counts[0]} passed, {counts[1]} failed,"
                  f" {counts[2]} ignored)", flush=True)
            if not ok or self.verbose:
                print(f"----- output of {t['name']} ({t['exe']}) -----\n{out}"
                      f"----- end of {t['name']} (exit {proc.returncode}) -----", flush=True)
            if not ok:
                self.failed.append(t["name"])

    def worker(self):
        while (t := self.take()) is not None:
            try:
                self.run_one(t)
            finally:
                self.done(t)

    def run(self):
        threads = [threading.Thread(target=self.worker) for _ in range(self.jobs)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("TEST_JOBS", "3")))
    ap.add_argument("--node-jobs", type=int,
                    default=int(os.environ.get("KUBEVIRT_TEST_NODES", "3")))
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--beside", metavar="CMD",
                    help="a shell command to run while the test binaries run")
    ap.add_argument("rest", nargs="*", help="arguments for every test binary (after --)")
    a = ap.parse_args()
    if a.jobs < 1 or a.node_jobs < 1:
        sys.exit("run-tests: --jobs and --node-jobs must be at least 1")
    os.environ["KUBEVIRT_TEST_NODES"] = str(a.node_jobs)

    tests = build([])
    # The doc tests first, on their own: they build the libraries once more (without the tests'
    # dev-dependency features), and rustdoc links them against rlibs that test-time builds
    # (tests that build the binaries they run) must not be replacing meanwhile.
    doc = subprocess.run(["cargo", "test", "--workspace", "--locked", "--doc"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    doc_rc = doc.returncode
    doc_out = doc.stdout.decode(errors="replace")
    docs = [sum(int(m.group(i)) for m in RESULT.finditer(doc_out)) for i in (2, 3)]
    print(f"run-tests: doc tests: {docs[0]} passed, {docs[1]} failed", flush=True)
    if doc_rc != 0:
        print(doc_out, flush=True)
    # The longest binaries first (as the last runs measured them), the short ones filling the
    # gaps at the end; those never measured as if they took a node test's or a second.
    durations = known_durations()
    tests.sort(key=lambda t: (-durations.get(t["name"], 60.0 if t["node"] else 1.0), t["name"]))
    # The binaries the tests run were built above with them: no test runs cargo again (a build
    # of another feature set would take minutes and replace binaries other tests are running).
    os.environ["KUBEVIRT_TEST_BINARIES_BUILT"] = "1"
    start = time.monotonic()
    print(f"run-tests: {len(tests)} test binaries, {a.jobs} at a time"
          f" ({sum(t['node'] for t in tests)} with nodes, {a.node_jobs} at a time)", flush=True)
    beside = None
    if a.beside:
        beside_log = open(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
                          / "run-tests-beside.log", "w+")
        beside = subprocess.Popen(["bash", "-c", a.beside], cwd=ROOT, stdout=beside_log,
                                  stderr=subprocess.STDOUT)
    r = Runner(tests, a.jobs, a.node_jobs, a.rest, a.verbose)
    r.run()
    beside_rc = 0
    if beside is not None:
        beside_rc = beside.wait()
        beside_log.seek(0)
        print(f"----- {a.beside} (exit {beside_rc}) -----\n{beside_log.read()}"
              f"----- end of {a.beside} -----", flush=True)
    record_durations(r.durations)
    passed, failed, ignored = r.totals
    print(f"run-tests: {passed} passed, {failed} failed, {ignored} ignored in"
          f" {time.monotonic() - start:.0f}s", flush=True)

    if r.failed or doc_rc != 0 or beside_rc != 0:
        for name in r.failed:
            print(f"run-tests: FAILED {name}", file=sys.stderr)
        if doc_rc != 0:
            print("run-tests: FAILED doc tests", file=sys.stderr)
        if beside_rc != 0:
            print(f"run-tests: FAILED {a.beside}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
