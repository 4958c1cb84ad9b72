#!/usr/bin/env python3
"""g3n vs llama.cpp on one Gemma 3n checkpoint: prefill, decode, time to first token, peak RSS, roofline.

    python3 bench/compare.py [CHECKPOINT_DIR] [--threads 2] [--quick] [--g3n-model LABEL=PATH ...]

* Converts CHECKPOINT_DIR (default /work/models/e2b, Hugging Face layout) for llama.cpp at Q4_0 and Q8_0 with
  bench/convert_llamacpp.py; the files are cached under --cache-dir (default /work/models/bench/) and reused
  while the checkpoint, the converter version and the type are unchanged (sidecar FILE.gguf.json).
* Runs llama.cpp (llama-cpp-python) on each file and build/release/g3n_bench on each --g3n-model, every run in
  its own subprocess, one after the other, so peak RSS (wait4 ru_maxrss / VmHWM) belongs to one engine.
* Prints one markdown table: every metric for every run and the ratio g3n / llama.cpp for each g3n model and
  the llama.cpp file with the same bits (label q4* <-> Q4_0, q8* <-> Q8_0, f16/bf16 <-> F16 if converted,
  otherwise the llama.cpp file with the most bits, marked "bits differ"); then the bandwidth roofline lines.

--g3n-model LABEL=PATH is repeatable. Default: bf16=CHECKPOINT_DIR (g3n reads the bf16 checkpoint directly).
When g3n's own quantised files exist:  --g3n-model q4=FILE --g3n-model q8=FILE.

Workload (same for both engines, mirroring bench/g3n_bench.cpp): prefill = one forward pass over N random
token ids (first id <bos>), best of 2, for each N in --prefill (default 128,512); time to first token = a fresh
128-token prompt until the argmax of its last logits; decode = --decode (default 128) greedy tokens after that
prompt, one token per forward pass. --quick: prefill 32, decode 16. llama.cpp runs with n_ctx 1024,
n_batch = n_ubatch = 512, F16 KV cache, no flash attention unless --flash-attn (llama-cpp-python's default),
swa_full off (llama-cli's default), mmap on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

GiB = 1024 ** 3
WAITED = 0.0  # seconds spent waiting for other processes to leave the CPUs
LCPP_KV_FROM_START = 20  # llama.cpp hard-codes: only layers 0..19 compute K/V for gemma3n


# ----------------------------------------------------------------------------------------------------------
# llama.cpp worker (runs in its own process: `compare.py --llama-worker FILE ...`)
# ----------------------------------------------------------------------------------------------------------


def random_ids(n: int, seed: int) -> list[int]:
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = [int(x) for x in rng.integers(1000, 200001, size=n)]
    ids[0] = 2
    return ids


def vm_status() -> dict:
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def llama_worker(a) -> None:
    import ctypes

    import numpy as np

    import llama_cpp

    base = vm_status()
    prefill = [int(x) for x in a.prefill.split(",") if x]
    res: dict = dict(engine="llama.cpp", model=a.llama_worker, threads=a.threads, python_baseline_rss_bytes=base.get("VmRSS"))
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=a.llama_worker, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=a.threads,
                          n_threads_batch=a.threads, logits_all=False, verbose=False, swa_full=False,
                          flash_attn=a.flash_attn, use_mmap=True)
    res["load_seconds"] = time.perf_counter() - t0
    n_vocab = llm.n_vocab()
    ctx = llm._ctx.ctx

    def last_argmax() -> int:
        p = llama_cpp.llama_get_logits_ith(ctx, -1)
        return int(np.ctypeslib.as_array(ctypes.cast(p, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,)).argmax())

    res["prefill"] = {}
    for n in prefill:
        ids = random_ids(n, n)
        best = 1e30
        for _ in range(2):
            llm.reset()
            t = time.perf_counter()
            llm.eval(ids)
            best = min(best, time.perf_counter() - t)
        res["prefill"][str(n)] = dict(seconds=best, tokens_per_second=n / best)

    ids = random_ids(128, 7)
    llm.reset()
    t = time.perf_counter()
    llm.eval(ids)
    nxt = last_argmax()
    t_first = time.perf_counter()
    res["time_to_first_token_seconds"] = t_first - t
    for _ in range(a.decode):
        llm.eval([nxt])
        nxt = last_argmax()
    dt = time.perf_counter() - t_first
    res["decode"] = dict(tokens=a.decode, seconds=dt, tokens_per_second=a.decode / dt)
    st = vm_status()
    res["vm_hwm_bytes"] = st.get("VmHWM")
    print(json.dumps(res))


# ----------------------------------------------------------------------------------------------------------
# Helpers for the parent
# ----------------------------------------------------------------------------------------------------------


def run_child_rusage(cmd: list[str], timeout: float) -> tuple[dict, dict]:
    """Like run_child but reads the child's own ru_maxrss with wait4 (per-process, not cumulative)."""
    import tempfile

    t0 = time.time()
    busy0, _ = cpu_busy()
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, text=True)
        deadline = time.time() + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                p.kill()
                os.wait4(p.pid, 0)
                raise RuntimeError(f"timed out after {timeout:.0f} s: {' '.join(cmd)}")
            time.sleep(0.05)
        p.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
    wall = time.time() - t0
    busy1, _ = cpu_busy()
    child_cpu = ru.ru_utime + ru.ru_stime
    others = max(0.0, (busy1 - busy0) - child_cpu) / (wall * (os.cpu_count() or 1))
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({p.returncode}): {err[-3000:]}")
    m = re.search(r"\{.*\}\s*$", out, re.S)
    if not m:
        raise RuntimeError(f"no JSON from {' '.join(cmd)}: {out[-2000:]} {err[-2000:]}")
    return json.loads(m.group(0)), dict(wall_seconds=wall, maxrss_bytes=ru.ru_maxrss * 1024, cpu_seconds=child_cpu,
                                        others_cpu_share=others)


def llama_decode_bytes(path: Path) -> dict:
    """Bytes of weights one llama.cpp decode token reads, from the file's tensor sizes: every tensor, except
    one row of token_embd (when it is not the output matrix) and of per_layer_token_embd, and except
    attn_k/attn_v/attn_k_norm of the KV-shared layers (llama.cpp never reads them). token_embd doubles as the
    output matrix (tied), so it is read in full."""
    import gguf

    r = gguf.GGUFReader(str(path))
    names = {t.name for t in r.tensors}
    tied = "output.weight" not in names
    total = file_weights = 0
    parts: dict[str, int] = {}
    for t in r.tensors:
        nb = int(t.n_bytes)
        file_weights += nb
        rows = int(t.shape[-1]) if len(t.shape) > 1 else 1  # gguf shape is ne order: ne[1] = rows for 2-D
        if t.name == "per_layer_token_embd.weight" or (t.name == "token_embd.weight" and not tied):
            b = nb // rows
        elif t.name.startswith("blk."):
            li = int(t.name.split(".")[1])
            kind = t.name.split(".")[2]
            b = 0 if (li >= LCPP_KV_FROM_START and kind in ("attn_k", "attn_v", "attn_k_norm")) else nb
        else:
            b = nb
        total += b
        key = t.name.split(".")[2] if t.name.startswith("blk.") else t.name.rsplit(".", 1)[0]
        parts[key] = parts.get(key, 0) + b
    types: dict[str, int] = {}
    for t in r.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + int(t.n_bytes)
    return dict(decode_weight_bytes_per_token=total, weight_bytes_in_file=file_weights, bytes_by_type=types,
                decode_bytes_by_tensor=dict(sorted(parts.items(), key=lambda kv: -kv[1])[:8]))


def _bw_worker(args):
    import numpy as np

    barrier, nbytes, reps = args
    a = np.ones(nbytes // 4, dtype=np.int32)
    a.max()  # fault the pages in
    times = []
    for _ in range(reps):
        barrier.wait()
        t = time.perf_counter()
        a.max()  # SIMD max: a streaming read (a float sum is compute-bound at ~9 GB/s per core here)
        times.append(time.perf_counter() - t)
    return times


def measure_bandwidth(threads: int, per_thread_bytes: int = 512 * 1024 ** 2, reps: int = 5) -> float:
    """Streaming read bandwidth with `threads` processes each scanning (max) its own 512 MiB int32 array (far beyond
    the caches), started together; bytes/s of the slowest reader, best repetition. Engine-neutral: the roofline
    of both engines uses this number."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    barrier = ctx.Manager().Barrier(threads)
    with ctx.Pool(threads) as pool:
        res = pool.map(_bw_worker, [(barrier, per_thread_bytes, reps)] * threads)
    best = 0.0
    for r in range(reps):
        t = max(res[w][r] for w in range(threads))
        best = max(best, threads * per_thread_bytes / t)
    return best


def cpu_busy() -> tuple[float, float]:
    """(busy seconds of all CPUs, monotonic time) from /proc/stat."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK"), time.monotonic()


def wait_quiet(max_wait: float, log, limit: float = 0.15) -> float:
    """Wait (up to max_wait s) until other processes use < limit of the CPUs; returns the last busy fraction."""
    global WAITED
    ncpu = os.cpu_count() or 1
    t_start = time.time()
    t_end = t_start + max_wait
    while True:
        b0, t0 = cpu_busy()
        time.sleep(2.0)
        b1, t1 = cpu_busy()
        frac = (b1 - b0) / ((t1 - t0) * ncpu)
        if frac < limit or time.time() > t_end:
            WAITED += time.time() - t_start
            if frac >= limit:
                log(f"WARNING: the machine is still {100 * frac:.0f}% busy with other work; measuring anyway")
            return frac
        log(f"machine {100 * frac:.0f}% busy with other work; waiting ...")
        time.sleep(10)


def ensure_converted(ckpt: Path, ftype: str, cache: Path, jobs: int, log) -> tuple[Path, dict, float]:
    import convert_llamacpp as conv

    out = cache / f"{ckpt.name}-{ftype}.gguf"
    side = Path(str(out) + ".json")
    sig = conv.source_signature(ckpt)
    if out.is_file() and side.is_file():
        try:
            s = json.loads(side.read_text())
            if (s.get("converter_version") == conv.CONVERTER_VERSION and s.get("source") == sig
                    and s.get("type") == ftype and s.get("file_bytes") == out.stat().st_size):
                log(f"using cached {out}")
                return out, s, 0.0
        except (ValueError, OSError):
            pass
    log(f"converting {ckpt} -> {out} ({ftype}) ...")
    t = time.time()
    s = conv.convert(ckpt, out, ftype, jobs=jobs, embed_q8=False, allow_mismatch=False, quiet=False)
    return out, s, time.time() - t


# ----------------------------------------------------------------------------------------------------------
# Table
# ----------------------------------------------------------------------------------------------------------


def bits_of(label: str) -> str | None:
    m = re.match(r"^(q4|q8|f16|bf16|f32)", label.lower())
    if not m:
        return None
    return {"q4": "q4_0", "q8": "q8_0", "f16": "f16", "bf16": "f16", "f32": "f32"}[m.group(1)]


def fmt(v, kind: str) -> str:
    if v is None:
        return "–"
    if kind == "tps":
        return f"{v:.2f}" if v < 100 else f"{v:.1f}"
    if kind == "s":
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    if kind == "gib":
        return f"{v / GiB:.2f}"
    if kind == "pct":
        return f"{100 * v:.0f}%"
    return str(v)


def make_table(runs: list[dict], pairs: list[tuple[int, int, bool]], prefill: list[int]) -> str:
    rows = []
    for n in prefill:
        rows.append((f"prefill {n} tokens (tok/s, ↑)", lambda r, n=n: r.get("prefill", {}).get(str(n), {}).get("tokens_per_second"), "tps"))
    rows += [
        (f"decode (tok/s, ↑)", lambda r: r.get("decode", {}).get("tokens_per_second"), "tps"),
        ("time to first token, 128-token prompt (s, ↓)", lambda r: r.get("time_to_first_token_seconds"), "s"),
        ("peak RSS (GiB, ↓)", lambda r: r.get("peak_rss"), "gib"),
        ("load (s, ↓)", lambda r: r.get("load_seconds"), "s"),
        ("weights on disk (GiB)", lambda r: r.get("weight_bytes"), "gib"),
        ("weight bytes read per decode token (GiB)", lambda r: r.get("decode_weight_bytes_per_token"), "gib"),
        ("roofline decode = bandwidth / bytes per token (tok/s)", lambda r: r.get("roofline_tps"), "tps"),
        ("decode as share of roofline", lambda r: r.get("share_of_roofline"), "pct"),
        ("CPU used by other processes during the run", lambda r: r.get("others_cpu_share"), "pct"),
    ]
    head = ["metric"] + [r["name"] for r in runs]
    for gi, li, differ in pairs:
        head.append(f"{runs[gi]['name']} / {runs[li]['name']}" + (" (bits differ)" if differ else ""))
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for title, get, kind in rows:
        cells = [title] + [fmt(get(r), kind) for r in runs]
        for gi, li, _ in pairs:
            if title.startswith("CPU used by other"):
                cells.append("")
                continue
            a, b = get(runs[gi]), get(runs[li])
            cells.append(f"{a / b:.2f}×" if (a is not None and b) else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", nargs="?", type=Path, default=Path("/work/models/e2b"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prefill", default="128,512")
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="smoke run: prefill 32, decode 16")
    ap.add_argument("--g3n-model", action="append", default=[], metavar="LABEL=PATH",
                    help="g3n model to run (repeatable); default bf16=CHECKPOINT")
    ap.add_argument("--no-g3n", action="store_true")
    ap.add_argument("--llama-types", default="q4_0,q8_0", help="comma list of f16,q8_0,q4_0 ('' = none)")
    ap.add_argument("--cache-dir", type=Path, default=Path("/work/models/bench"))
    ap.add_argument("--g3n-bench", type=Path, default=REPO / "build" / "release" / "g3n_bench")
    ap.add_argument("--flash-attn", action="store_true", help="llama.cpp flash attention on")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per engine run")
    ap.add_argument("--retries", type=int, default=2,
                    help="re-run an engine whose run was disturbed (others > --max-others of the CPUs) up to N times")
    ap.add_argument("--max-others", type=float, default=0.10)
    ap.add_argument("--wait-quiet", type=float, default=120,
                    help="before each run wait up to this many seconds for other processes to leave the CPUs idle")
    ap.add_argument("--json-out", type=Path, help="also write all raw results here")
    # internal
    ap.add_argument("--llama-worker", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.llama_worker:
        llama_worker(a)
        return
    if a.quick:
        a.prefill, a.decode = "32", 16
    prefill = [int(x) for x in a.prefill.split(",") if x]
    t_start = time.time()
    log = lambda *m: print(*m, file=sys.stderr, flush=True)  # noqa: E731

    # --- llama.cpp files
    llama_runs: list[dict] = []
    conv_seconds = 0.0
    for ft in [x for x in a.llama_types.split(",") if x]:
        path, summary, secs = ensure_converted(a.checkpoint, ft, a.cache_dir, a.threads, log)
        conv_seconds += secs
        llama_runs.append(dict(name=f"llama.cpp {ft.upper()}", bits=ft, path=path, convert=summary))

    # --- g3n models
    g3n_specs = a.g3n_model or ([] if a.no_g3n else [f"bf16={a.checkpoint}"])
    g3n_runs = []
    for spec in g3n_specs:
        label, _, p = spec.partition("=")
        if not p:
            raise SystemExit(f"--g3n-model wants LABEL=PATH, got {spec!r}")
        g3n_runs.append(dict(name=f"g3n {label}", bits=bits_of(label), path=Path(p), label=label))

    # --- run, one engine at a time (after waiting for the machine to be quiet)
    bench_t0 = time.time()
    g3n_bw = None

    def run(r: dict, cmd: list[str]) -> dict:
        best = None
        for attempt in range(1 + a.retries):
            r["others_busy_before"] = wait_quiet(a.wait_quiet, log)
            log(f"running {r['name']}: {' '.join(cmd)}")
            res, info = run_child_rusage(cmd, a.timeout)
            if best is None or info["others_cpu_share"] < best[1]["others_cpu_share"]:
                best = (res, info)
            if info["others_cpu_share"] <= a.max_others:
                break
            log(f"{r['name']}: other processes took {100 * info['others_cpu_share']:.0f}% of the CPUs during the "
                f"run; {'running it again' if attempt < a.retries else 'keeping the least disturbed run'}")
        res, info = best
        r["attempts"] = attempt + 1
        r.update(res)
        r["wall_seconds"] = info["wall_seconds"]
        r["cpu_seconds"] = info["cpu_seconds"]
        r["others_cpu_share"] = info["others_cpu_share"]
        return info

    for r in g3n_runs:
        cmd = [str(a.g3n_bench), "-m", str(r["path"]), "-t", str(a.threads), "--prefill", ",".join(map(str, prefill)),
               "--decode", str(a.decode)]
        info = run(r, cmd)
        # g3n_bench reports getrusage(SELF) taken before its 1 GiB bandwidth buffer; wait4's maxrss includes it
        r["peak_rss"] = r.get("peak_rss_bytes")
        r["maxrss_incl_bandwidth_buffer"] = info["maxrss_bytes"]
        mem = r.get("memory", {})
        r["weight_bytes"] = (mem.get("core_weight_bytes") or 0) + (mem.get("ple_table_bytes") or 0) or None
        g3n_bw = g3n_bw or r.get("memory_bandwidth_bytes_per_second")
    for r in llama_runs:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--llama-worker", str(r["path"]), "--threads",
               str(a.threads), "--prefill", ",".join(map(str, prefill)), "--decode", str(a.decode)]
        if a.flash_attn:
            cmd.append("--flash-attn")
        info = run(r, cmd)
        r["peak_rss"] = info["maxrss_bytes"]
        db = llama_decode_bytes(r["path"])
        r.update(db)
        r["weight_bytes"] = db["weight_bytes_in_file"]
    wait_quiet(a.wait_quiet, log)
    bandwidth = measure_bandwidth(a.threads)
    bench_seconds = time.time() - bench_t0
    bw_source = f"{a.threads} processes each scanning 512 MiB with numpy max"
    for r in g3n_runs + llama_runs:
        b = r.get("decode_weight_bytes_per_token")
        if b:
            r["roofline_tps"] = bandwidth / b
            if r.get("decode"):
                r["share_of_roofline"] = r["decode"]["tokens_per_second"] / r["roofline_tps"]

    # --- pairs and table
    runs = llama_runs + g3n_runs
    pairs = []
    order = ["q4_0", "q8_0", "f16", "f32"]
    for gi, g in enumerate(g3n_runs):
        same = [i for i, l in enumerate(llama_runs) if l["bits"] == g["bits"]]
        if same:
            pairs.append((len(llama_runs) + gi, same[0], False))
        elif llama_runs:
            best = max(range(len(llama_runs)), key=lambda i: order.index(llama_runs[i]["bits"]))
            pairs.append((len(llama_runs) + gi, best, True))

    import platform

    cpu = "?"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"## g3n vs llama.cpp — {a.checkpoint.name}, {a.threads} threads{' (quick)' if a.quick else ''}\n")
    print(f"CPU: {cpu} ({os.cpu_count()} cores visible, {a.threads} used); memory read bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s ({bw_source}"
          + (f"; g3n_bench measured {g3n_bw / 1e9:.1f} GB/s" if g3n_bw else "")
          + f"); prefill {','.join(map(str, prefill))} tokens, decode {a.decode} tokens after a 128-token prompt.\n")
    print(make_table(runs, pairs, prefill))
    print()
    print("Roofline (decode is bound by reading every weight once per token: time/token ≥ bytes / bandwidth):\n")
    for r in runs:
        b = r.get("decode_weight_bytes_per_token")
        if not b:
            continue
        line = (f"- {r['name']}: {b / GiB:.2f} GiB/token ÷ {bandwidth / 1e9:.1f} GB/s = {b / bandwidth * 1e3:.0f} ms/token "
                f"→ roofline {r['roofline_tps']:.2f} tok/s")
        if r.get("decode"):
            line += f"; measured {r['decode']['tokens_per_second']:.2f} tok/s = {100 * r['share_of_roofline']:.0f}% of it"
        print(line)
    total = time.time() - t_start
    print(f"\nWall time: {total:.0f} s, of which {WAITED:.0f} s waiting for a quiet machine (conversion "
          f"{conv_seconds:.0f} s, benchmark runs {bench_seconds - WAITED:.0f} s: "
          + ", ".join(f"{r['name']} {r['wall_seconds']:.0f} s" for r in runs) + ").")
    if a.json_out:
        def clean(r):
            return {k: (str(v) if isinstance(v, Path) else v) for k, v in r.items()}

        a.json_out.write_text(json.dumps(dict(runs=[clean(r) for r in runs], bandwidth=bandwidth,
                                              bandwidth_source=bw_source, g3n_bench_bandwidth=g3n_bw,
                                              wall_seconds=total, waited_seconds=WAITED,
                                              conversion_seconds=conv_seconds, quick=a.quick,
                                              platform=platform.platform(), cpu=cpu), indent=1, default=str))


if __name__ == "__main__":
    main()
