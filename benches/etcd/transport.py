"""Which etcd API the filter should call: gRPC (KV/Txn, Watch) or the JSON gateway (/v3/kv/...).

Measures, against one running etcd member, the median and p99 round trip of the two calls the
filter makes on the request path: a Range of one key, and a compare-and-swap Txn (compare
mod_revision, put). Each transport keeps one connection open, as Envoy's cluster would. The two
are measured interleaved in one run, so the ratio holds on a noisy machine.

    .venv/bin/python benches/etcd/transport.py --endpoint 127.0.0.1:2379 [--n 2000]

The messages are hand-encoded protobuf (the same few fields `filter/core/src/session/etcd/proto.rs`
encodes), sent with grpcio's raw-bytes calls; the JSON side is httpx over HTTP/1.1 keep-alive.
"""

import argparse
import base64
import statistics
import time

import grpc
import httpx


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(num: int, data: bytes) -> bytes:
    return varint(num << 3 | 2) + varint(len(data)) + data


def field_int(num: int, v: int) -> bytes:
    return varint(num << 3) + varint(v)


def range_req(key: bytes) -> bytes:
    return field_bytes(1, key)


def txn_req(key: bytes, value: bytes) -> bytes:
    # compare: mod_revision(key) > 0 (target MOD=2, result GREATER=1); success: put.
    compare = field_int(1, 1) + field_int(2, 2) + field_bytes(3, key) + field_int(6, 0)
    put = field_bytes(1, key) + field_bytes(2, value)
    return field_bytes(1, compare) + field_bytes(2, field_bytes(2, put))


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", default="127.0.0.1:2379")
    ap.add_argument("--n", type=int, default=2000)
    a = ap.parse_args()
    key, value = b"/portcullis-bench/k", b'{"q":"full"}'
    ch = grpc.insecure_channel(a.endpoint)
    g_range = ch.unary_unary("/etcdserverpb.KV/Range")
    g_txn = ch.unary_unary("/etcdserverpb.KV/Txn")
    g_put = ch.unary_unary("/etcdserverpb.KV/Put")
    g_put(field_bytes(1, key) + field_bytes(2, value))
    http = httpx.Client(base_url=f"http://{a.endpoint}")
    j_range = {"key": b64(key)}
    j_txn = {
        "compare": [{"result": "GREATER", "target": "MOD", "key": b64(key), "mod_revision": "0"}],
        "success": [{"request_put": {"key": b64(key), "value": b64(value)}}],
    }
    calls = {
        "grpc range": lambda: g_range(range_req(key)),
        "json range": lambda: http.post("/v3/kv/range", json=j_range).raise_for_status(),
        "grpc txn": lambda: g_txn(txn_req(key, value)),
        "json txn": lambda: http.post("/v3/kv/txn", json=j_txn).raise_for_status(),
    }
    times = {k: [] for k in calls}
    for _ in range(50):
        for f in calls.values():
            f()
    for _ in range(a.n):
        for name, f in calls.items():
            t = time.perf_counter()
            f()
            times[name].append((time.perf_counter() - t) * 1e6)
    print(f"{a.n} calls each, interleaved, one connection per transport")
    print(f"{'call':<12} {'p50 µs':>8} {'p99 µs':>8}")
    for name, xs in times.items():
        print(f"{name:<12} {statistics.median(xs):>8.0f} {pct(xs, 0.99):>8.0f}")
    for op in ("range", "txn"):
        r = statistics.median(times[f"json {op}"]) / statistics.median(times[f"grpc {op}"])
        print(f"json/grpc median ratio, {op}: {r:.2f}")


if __name__ == "__main__":
    main()
