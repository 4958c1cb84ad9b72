"""The exact shortcuts against the plain path, on a float32 random checkpoint from `g3n make-random`:
prefill that stops at the first KV-shared layer, the sparse down projection in decode (layers with
activation sparsity), and chunked prefill. Float weights: logits within 1e-4, greedy tokens identical.
Also reports (not asserts) the quantised files' agreement with float on the same random weights."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from g3n_harness import check_ok

PROMPT = "2,105,2364,107," + ",".join(str(1000 + 37 * i) for i in range(60))


@pytest.fixture(scope="module")
def tinyf(g3n, tmp_path_factory):
    out = tmp_path_factory.mktemp("tinyf") / "model"
    check_ok(g3n.run("make-random", "--preset", "tiny", "--dtype", "f32", "--seed", "3", "--out", out), "make-random")
    yield out
    shutil.rmtree(out, ignore_errors=True)


def test_prefill_skip_and_sparse_decode_equal_plain(g3n, tinyf, tmp_path):
    fast, plain = tmp_path / "fast.npy", tmp_path / "plain.npy"
    a = g3n.run("generate", "-m", tinyf, "--ids", PROMPT, "-n", "48", "--logits-out", fast)
    b = g3n.run("generate", "-m", tinyf, "--ids", PROMPT, "-n", "48", "--logits-out", plain, "--plain")
    check_ok(a, "fast")
    check_ok(b, "plain")
    assert a.stdout == b.stdout
    err = float(np.abs(np.load(fast) - np.load(plain)).max())
    print(f"fast paths vs plain: max |Δ| = {err:.2e}")
    assert err <= 1e-4


@pytest.mark.parametrize("chunk", [1, 7, 33])
def test_chunked_prefill_equals_one_pass(g3n, tinyf, tmp_path, chunk):
    # The tiny preset's sliding window is 32: chunks shorter and longer than it, with a 64-token prompt.
    one, parts = tmp_path / "one.npy", tmp_path / "parts.npy"
    check_ok(g3n.run("score", "-m", tinyf, "--ids", PROMPT, "--out", one, "--chunk", "256"), "one pass")
    check_ok(g3n.run("score", "-m", tinyf, "--ids", PROMPT, "--out", parts, "--chunk", str(chunk)), "chunked")
    err = float(np.abs(np.load(one) - np.load(parts)).max())
    assert err <= 1e-4, err


def test_quantised_files_report(g3n, tinyf, tmp_path):
    """Figures only: top-1 agreement and KL of q8 / q4 against float on 256 teacher-forced positions."""
    gen = g3n.run("generate", "-m", tinyf, "--ids", "2,105,2364,107", "-n", "252")
    check_ok(gen, "generate")
    ids = "2,105,2364,107," + ",".join(gen.stdout.split())
    ref = tmp_path / "f.npy"
    check_ok(g3n.run("score", "-m", tinyf, "--ids", ids, "--out", ref), "score float")
    a = np.load(ref).astype(np.float64)
    for q in ("q8", "q4"):
        f = tmp_path / f"{q}.gguf"
        check_ok(g3n.run("quantize", "-m", tinyf, "--type", q, "--out", f), "quantize")
        out = tmp_path / f"{q}.npy"
        check_ok(g3n.run("score", "-m", f, "--ids", ids, "--out", out), "score quantised")
        b = np.load(out).astype(np.float64)
        la = a - np.log(np.exp(a - a.max(1, keepdims=True)).sum(1, keepdims=True)) - a.max(1, keepdims=True)
        lb = b - np.log(np.exp(b - b.max(1, keepdims=True)).sum(1, keepdims=True)) - b.max(1, keepdims=True)
        kl = float((np.exp(la) * (la - lb)).sum(1).mean())
        agree = float((a.argmax(1) == b.argmax(1)).mean())
        print(f"{q}: top-1 agreement {agree:.3f}, KL {kl:.4f} over {len(a)} positions")
        assert np.isfinite(b).all()


def _memory_line(stderr: str) -> dict[str, float]:
    import re

    m = re.search(r"core weights ([\d.]+) MiB mapped \(([\d.]+) MiB resident\), PLE table ([\d.]+) MiB mapped "
                  r"\(([\d.]+) MiB of pages touched\)", stderr)
    assert m, stderr
    return dict(core=float(m[1]), core_resident=float(m[2]), ple=float(m[3]), ple_resident=float(m[4]))


@pytest.mark.parametrize("kind", ["dir", "q8"])
def test_ple_table_stays_out_of_memory(g3n, tinyf, tmp_path, kind):
    """300 distinct CJK characters (single tokens spread over the vocabulary): each reads its PLE row from the
    mapping. Without releasing the pages a fault maps, the resident share of the table grows by at least the pages
    read (4-8 KiB a token here; ~0.7 MiB a token on a 4 GB E2B file whose page cache holds large folios, where a
    fault maps the whole folio); g3n unmaps them after reading the row."""
    model = tinyf
    if kind == "q8":
        model = tmp_path / "q8.gguf"
        check_ok(g3n.run("quantize", "-m", tinyf, "--type", "q8", "--out", model), "quantize")
    words = "".join(chr(0x4E00 + 61 * i) for i in range(300))
    r = g3n.run("run", "-m", model, "-v", "-n", "2", "--raw", words)
    check_ok(r, "run")
    mem = _memory_line(r.stderr)
    print(f"  PLE table {mem['ple']:.1f} MiB mapped, {mem['ple_resident']:.2f} MiB resident after 300 tokens")
    assert mem["ple"] > 10, mem  # a table large enough for the test to mean something
    assert mem["ple_resident"] < 0.5, mem  # without the release: 1.2 (q8) and 2.4 MiB (f32) here
