#!/usr/bin/env python3
"""`g3n serve` under load: aggregate decode tokens/s with 1, 4 and 8 concurrent streams, and time to first token.

    python3 bench/server_bench.py [--model /work/models/bench/e2b-q8_0.gguf] [--threads 2] [--streams 1,4,8]
                                  [--tokens 48] [--rounds 2]

Starts the server with --parallel = the largest stream count, then for each stream count N runs N streaming chat
requests at once (greedy, --tokens new tokens each, distinct prompts so no prefix is shared), --rounds times,
and reports: aggregate decode tokens/s in the steady state (pieces streamed by all streams while every one of
them is decoding: after the last first token, before the first stream ends, over that window's length), mean rows per batched pass over the weights (from /metrics), and time to
first token p50 / p99 over all requests. Decode is memory-bound: batching N streams into one pass over the
weights should multiply the aggregate rate by nearly N (goal: 8 streams >= 4x one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def metrics(base: str) -> dict:
    text = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def stream(base: str, prompt: str, tokens: int, result: dict) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": prompt}], "max_tokens": tokens, "temperature": 0,
                       "stream": True, "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(base + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    first = last = None
    n = 0
    stamps = []
    with urllib.request.urlopen(req, timeout=3600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                n = chunk["usage"]["completion_tokens"]
            if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
                stamps.append(now)
    result.update(start=t0, first=first, last=last, tokens=n, stamps=stamps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="/work/models/bench/e2b-q8_0.gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--streams", default="1,4,8")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--port", type=int, default=18123)
    a = ap.parse_args()
    counts = [int(x) for x in a.streams.split(",")]
    binary = REPO / "build" / "release" / "g3n"
    srv = subprocess.Popen([str(binary), "serve", "-m", a.model, "--port", str(a.port), "--parallel", str(max(counts)),
                            "--queue", "64", "-t", str(a.threads)], stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{a.port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except Exception:
                time.sleep(1)
        rows = []
        for n in counts:
            rates, ttfts, batch = [], [], []
            for rd in range(a.rounds):
                m0 = metrics(base)
                results = [dict() for _ in range(n)]
                prompts = [f"Stream {i} round {rd}: write a long story about {'the sea' if i % 2 else 'mountains'}."
                           for i in range(n)]
                threads = [threading.Thread(target=stream, args=(base, prompts[i], a.tokens, results[i]))
                           for i in range(n)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                m1 = metrics(base)
                # Steady state: the window in which every stream is decoding (after the last first token,
                # before the first stream ends); pieces streamed in it, over its length.
                lo = max(r["first"] for r in results)
                hi = min(r["last"] for r in results)
                if n == 1 or hi <= lo:
                    lo, hi = results[0]["first"], results[0]["last"]
                inside = sum(sum(1 for t in r["stamps"] if lo < t <= hi) for r in results)
                rates.append(inside / max(hi - lo, 1e-9))
                ttfts += [r["first"] - r["start"] for r in results]
                p = m1.get("g3n_decode_passes_total", 0) - m0.get("g3n_decode_passes_total", 0)
                batch.append((m1.get("g3n_decode_rows_total", 0) - m0.get("g3n_decode_rows_total", 0)) / max(p, 1))
            ttfts.sort()
            rows.append({"streams": n, "aggregate_decode_tok_s": max(rates), "rows_per_pass": statistics.mean(batch),
                         "ttft_p50_s": ttfts[len(ttfts) // 2], "ttft_p99_s": ttfts[min(len(ttfts) - 1,
                                                                                      int(0.99 * len(ttfts)))]})
        one = rows[0]["aggregate_decode_tok_s"]
        print(f"| streams ({a.threads} threads, {Path(a.model).name}) | aggregate decode tok/s | x one stream "
              "| rows per pass | TTFT p50 s | TTFT p99 s |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in rows:
            print(f"| {r['streams']} | {r['aggregate_decode_tok_s']:.2f} | {r['aggregate_decode_tok_s'] / one:.2f} "
                  f"| {r['rows_per_pass']:.2f} | {r['ttft_p50_s']:.2f} | {r['ttft_p99_s']:.2f} |")
        print(json.dumps(rows))
    finally:
        srv.terminate()
        srv.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
