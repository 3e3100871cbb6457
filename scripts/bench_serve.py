#!/usr/bin/env python3
"""Load generator for `adiff serve` (used by scripts/bench_serve.sh): the same explain request
sent one after another (sequential), then from N client threads at once (concurrent), rounds
alternating; prints throughput, p50/p99 latency and the concurrent/sequential ratio. Checks that
every answer equals the first one (the server's batching must not change the text).

Standard library only: multipart bodies are built by hand.
"""

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import time
import urllib.request
import uuid


def multipart(files, fields):
    boundary = uuid.uuid4().hex
    parts = []
    for name, path in files:
        with open(path, "rb") as f:
            data = f.read()
        parts.append(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{os.path.basename(path)}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    for name, value in fields:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def one(url, body, ctype):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype}, method="POST")
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        answer = json.loads(r.read())
    return time.perf_counter() - t0, [a["explanation"] for a in answer["answers"]], answer["batch"]


def run(url, body, ctype, n, concurrency):
    t0 = time.perf_counter()
    if concurrency == 1:
        results = [one(url, body, ctype) for _ in range(n)]
    else:
        with cf.ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(lambda _: one(url, body, ctype), range(n)))
    wall = time.perf_counter() - t0
    return wall, results


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--audio1", required=True)
    ap.add_argument("--audio2", required=True)
    ap.add_argument("--tier", default="2")
    ap.add_argument("--max-tokens", default=None, help="max_tokens field (default: the server's)")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    fields = [("tier", a.tier)] + ([("max_tokens", a.max_tokens)] if a.max_tokens else [])
    body, ctype = multipart([("audio1", a.audio1), ("audio2", a.audio2)], fields)
    url = a.url.rstrip("/") + "/v1/explain"
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    _, (_, expected, _) = 0, one(url, body, ctype)  # warm-up, and the reference answer
    best = {1: None, a.concurrency: None}
    for r in range(a.rounds):
        for c in (1, a.concurrency):
            wall, results = run(url, body, ctype, a.requests, c)
            lat = [x[0] for x in results]
            bad = sum(1 for x in results if x[1] != expected)
            batches = statistics.mean(x[2] for x in results)
            rps = a.requests / wall
            print(
                f"round {r + 1} concurrency {c:>2}: {rps:6.2f} req/s, p50 {pct(lat, 0.5) * 1000:7.1f} ms, "
                f"p99 {pct(lat, 0.99) * 1000:7.1f} ms, mean batch {batches:4.1f}, "
                f"answers differing from the first: {bad}"
            )
            if bad:
                raise SystemExit("an answer differs from the first: batching changed the text")
            if best[c] is None or rps > best[c][0]:
                best[c] = (rps, pct(lat, 0.5), pct(lat, 0.99))
    seq, con = best[1], best[a.concurrency]
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(
        f"best of {a.rounds}: sequential {seq[0]:.2f} req/s (p50 {seq[1] * 1000:.1f} ms, p99 {seq[2] * 1000:.1f} ms); "
        f"concurrency {a.concurrency} {con[0]:.2f} req/s (p50 {con[1] * 1000:.1f} ms, p99 {con[2] * 1000:.1f} ms); "
        f"ratio {con[0] / seq[0]:.2f}x"
    )


if __name__ == "__main__":
    main()
