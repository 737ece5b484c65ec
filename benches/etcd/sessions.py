"""What `state.sessions: etcd` adds to a tools/call: one compare-and-swap Txn per decided request.

Starts the replicated stack of test-harness/e2e/test_replicated_sessions.py (two Envoys of
envoy-configs/replicated, `--concurrency 2`, a 3-member etcd cluster on loopback, one workbench MCP
server), with both Envoys on the etcd backend and no identity; only the session mode differs:

- A: `state.sessions: local` (containment on etcd, the session record in A's shared data);
- B: `state.sessions: etcd` (the session record written to etcd before each call is forwarded).

One MCP session on each; the calls alternate A, B, A, B, ... so both see the same machine load.
Prints the median and p99 of each, and their ratio.

    .venv/bin/python benches/etcd/sessions.py [--n 300] [--policy testdata/policies/allow-all.pcl]

Needs what the e2e tests need (`scripts/setup`: Envoy, etcd-server, the built .wasm and policyc).
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "test-harness" / "e2e"))

import portcullis_e2e as pe  # noqa: E402
from test_replicated_sessions import SHARED, start_pair  # noqa: E402

LOCAL = {**SHARED, "state": {**SHARED["state"], "sessions": "local"}}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="calls per replica")
    ap.add_argument("--warmup", type=int, default=20, help="calls per replica not counted")
    ap.add_argument("--policy", type=Path, default=REPO / "testdata" / "policies" / "allow-all.pcl")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="portcullis-sessions-bench-") as tmp:
        tmp = Path(tmp)
        keys = pe.Keys.generate(tmp / "keys")
        bundle = pe.compile_bundle(args.policy, tmp / "bench.bundle", keys)
        with pe.stack(tmp / "run") as stack:
            pair = start_pair(stack, keys, bundle, tmp, {"a": LOCAL, "b": SHARED})
            times: dict[str, list[float]] = {"a": [], "b": []}
            with pair.agent(pair.a, "bench") as on_a, pair.agent(pair.b, "bench") as on_b:
                clients = {"a": on_a, "b": on_b}
                for c in clients.values():
                    assert c.initialize().status == 200
                for i in range(args.warmup + args.n):
                    for name, c in clients.items():
                        t0 = time.perf_counter()
                        r = c.call("read_file", {"path": "/repo/a"})
                        dt = time.perf_counter() - t0
                        assert r.status == 200 and r.error_code is None, r.text
                        if i >= args.warmup:
                            times[name].append(dt * 1000)
    a, b = times["a"], times["b"]
    print(f"tools/call through Envoy, {args.n} calls each, interleaved, policy {args.policy.name}")
    print("| sessions | p50 | p99 |")
    print("|---|---:|---:|")
    print(f"| local (A) | {statistics.median(a):.2f} ms | {pct(a, 0.99):.2f} ms |")
    print(f"| etcd (B)  | {statistics.median(b):.2f} ms | {pct(b, 0.99):.2f} ms |")
    print(f"etcd / local: p50 {statistics.median(b) / statistics.median(a):.2f}, "
          f"p99 {pct(b, 0.99) / pct(a, 0.99):.2f}; "
          f"added p50 {statistics.median(b) - statistics.median(a):.2f} ms")


if __name__ == "__main__":
    main()
