"""llama.cpp loads what `g3n quantize` writes and computes it correctly.

A small random Gemma3nForCausalLM with the real 262,400 vocabulary (bench/verify_llamacpp.py's "realvocab":
llama.cpp's hard-coded gemma3n structure, PLE width 256, LAuReL rank 64, 4 AltUp streams) is saved with
save_pretrained, written by `g3n quantize --type f32|q8`, and evaluated by llama.cpp (llama-cpp-python, in a
subprocess). F32: llama.cpp's logits equal transformers' computed with ggml's known numerics (fp16 GELU table,
...) within 1e-2 and the top-1 everywhere; Q8_0: loads and keeps >= 90% of the top-1 choices.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from g3n_harness import check_ok

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def case(g3n, tmp_path_factory, _torch_threads):
    pytest.importorskip("llama_cpp")
    sys.path.insert(0, str(REPO / "bench"))
    import verify_llamacpp as v

    d = tmp_path_factory.mktemp("llamacpp_reads_g3n")
    ids, refs = v.build("realvocab", d / "hf", 7)
    tiny = d / "tiny"
    check_ok(g3n.run("make-random", "--preset", "tiny", "--modalities", "text", "--out", tiny), "make-random")
    shutil.copy(tiny / "tokenizer.model", d / "hf" / "tokenizer.model")
    yield v, d, ids, refs
    shutil.rmtree(d, ignore_errors=True)  # ~1.6 GB of checkpoints and GGUFs


@pytest.mark.parametrize("qtype", ["f32", "q8"])
def test_llama_cpp_computes_g3n_quantize_output(g3n, case, record, qtype):
    v, d, ids, refs = case
    out = d / f"g3n-{qtype}.gguf"
    check_ok(g3n.run("quantize", "-m", d / "hf", "--type", qtype, "--out", out), f"quantize {qtype}")
    got = v.llama_logits(out, ids)  # raises with llama.cpp's message if it cannot load the file
    ref = refs["hf_f32_ggml_numerics"] if qtype == "f32" else refs["hf_f32"]
    top1 = float((got.argmax(-1) == ref.argmax(-1)).mean())
    err = float(np.abs(got - ref).max())
    ok = (err <= 1e-2 and top1 == 1.0) if qtype == "f32" else top1 >= 0.9
    record("llama.cpp reads g3n", f"quantize --type {qtype}", f"top1={top1:.3f} max|d|={err:.1e}", ok)
    assert ok, (qtype, top1, err)
