#!/usr/bin/env python3
"""Check that bench/convert_llamacpp.py produces a GGUF that llama.cpp computes *correctly*, not just loads.

    python3 bench/verify_llamacpp.py [--work /work/models/bench/verify] [--keep]

Builds small random Gemma3nForCausalLM models with transformers (weights re-randomised with the parity suite's
tests/parity/gemma3n_models.randomise_, saved in bfloat16 like the real checkpoint), converts them, evaluates a
token list with llama_cpp.Llama(..., logits_all=True) and compares every position's logits with transformers'
float32 logits of the same (bf16-rounded) weights.

The small models must respect what llama.cpp hard-codes for gemma3n (PLE width 256, LAuReL rank 64, 4 AltUp
streams, KV computed by layers 0..19 only, activation sparsity on layers 0..9, full attention every 5th layer):

  kvshare22  22 layers (layers 20, 21 KV-shared), D=64, 4 heads / 2 KV heads, head_dim 32, FFN 128, window 12,
             vocab 512 (synthetic byte vocabulary, no tokenizer.model), 48-token prompt (crosses the window).
             Also converted with the KV-shared layers' k_proj/v_proj/k_norm removed from the checkpoint (the
             layout g3n make-random writes): must give the same logits (zero-filled, never read).
  realvocab  3 layers, D=32, vocab 262400 / PLE vocab 262144, tokenizer.model from `g3n make-random --preset
             tiny`, prompt with ids >= 262144 (PLE row-0 padding) and 262399.

For each: F32 and F16 files are compared (top-1 agreement, max |delta logit|); Q8_0 and Q4_0 files are loaded and
compared loosely; and the Q4_0 file's tensor types are compared with what llama.cpp's own llama_model_quantize
makes from the F16 file (the llama-quantize recipe). Prints a JSON report.
"""

from __future__ import annotations

import argparse
import copy
import types
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "parity"))
sys.path.insert(0, str(HERE))

import convert_llamacpp as conv  # noqa: E402

S, F = "sliding_attention", "full_attention"
POST_NORM_FACTOR = {"kvshare22": 0.2, "realvocab": 0.2}


def text_kwargs(name: str) -> dict:
    base = dict(
        hidden_size_per_layer_input=256, laurel_rank=64, altup_num_inputs=4, altup_active_idx=0,
        altup_correct_scale=True, final_logit_softcapping=30.0, rms_norm_eps=1e-6,
        hidden_activation="gelu_pytorch_tanh", max_position_embeddings=4096, pad_token_id=0, bos_token_id=2,
        eos_token_id=1, tie_word_embeddings=True,
    )
    if name == "kvshare22":
        L = 22
        base.update(vocab_size=512, vocab_size_per_layer_input=512, num_hidden_layers=L, hidden_size=64,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=32, intermediate_size=128,
                    num_kv_shared_layers=2, sliding_window=12)
    elif name == "realvocab":
        L = 3
        base.update(vocab_size=262400, vocab_size_per_layer_input=262144, num_hidden_layers=L, hidden_size=32,
                    num_attention_heads=2, num_key_value_heads=1, head_dim=16, intermediate_size=64,
                    num_kv_shared_layers=0, sliding_window=16)
    else:
        raise ValueError(name)
    base["layer_types"] = [F if (i + 1) % 5 == 0 else S for i in range(L)]
    base["activation_sparsity_pattern"] = [0.95 if i < 10 else 0.0 for i in range(L)]
    return base


def prompt(name: str) -> list[int]:
    rng = np.random.default_rng(1234)
    if name == "kvshare22":
        return [2] + [int(x) for x in rng.integers(260, 512, size=47)]
    ids = [2] + [int(x) for x in rng.integers(3, 262144, size=39)]
    for pos, tok in ((5, 262144), (6, 262300), (20, 262399), (30, 262145)):
        ids[pos] = tok
    return ids


def build(name: str, out: Path, seed: int):
    import torch
    from transformers import Gemma3nForCausalLM, Gemma3nTextConfig

    import gemma3n_models as gm

    cfg = Gemma3nTextConfig(**text_kwargs(name))
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = Gemma3nForCausalLM(cfg).eval()
    gm.randomise_(model, seed)
    # randomise_ is tuned for the parity suite's 3-10 layer models; at 22 layers its post-norm gain of 2.5 makes
    # a chaotic model (1e-3 relative noise, e.g. ggml's fp16 GELU table, moves logits by ~10). A gain of 0.5
    # keeps it well conditioned (float32 vs float64 logits within ~1e-4) without switching any path off.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.ndim == 1 and any(k in n for k in gm.POST_NORMS):
                p.mul_(POST_NORM_FACTOR[name])
    gm.round_to_bf16_(model)
    ids = prompt(name)
    x = torch.tensor([ids])
    refs = {}
    with torch.no_grad():
        # the reference must be computed before the bf16 copy is made: model.to(bfloat16) also rounds the
        # float buffers (RoPE inv_freq, embedding scales), and .to(float32) does not bring them back
        refs["hf_f32"] = model(input_ids=x, use_cache=False).logits[0].float().numpy()
        refs["hf_f64"] = copy.deepcopy(model).double()(input_ids=x, use_cache=False).logits[0].float().numpy()
        emu = copy.deepcopy(model)
        ggml_numerics_(emu)
        refs["hf_f32_ggml_numerics"] = emu(input_ids=x, use_cache=False).logits[0].float().numpy()
    out.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(out)
    return ids, refs


def ggml_numerics_(model) -> None:
    """Make a transformers Gemma 3n compute like llama.cpp's CPU backend where it knowingly differs:
    ggml_gelu reads a table indexed by the fp16 value of x and stores fp16 results (GGML_GELU_FP16), and
    llama.cpp's gaussian top-k uses the unbiased (n-1) standard deviation where transformers uses ddof=0."""
    import torch
    import torch.nn.functional as Fn
    import transformers.models.gemma3n.modeling_gemma3n as mg

    class GeluFp16Table(torch.nn.Module):
        def forward(self, x):
            y = Fn.gelu(x.half().float(), approximate="tanh").half().float()
            return torch.where(x >= 10, x, torch.where(x <= -10, torch.zeros_like(x), y))

    for mod in model.modules():
        if hasattr(mod, "act_fn"):
            mod.act_fn = GeluFp16Table()

    def topk_unbiased(self, inputs):
        mult = torch.distributions.normal.Normal(0, 1).icdf(torch.tensor(self.activation_sparsity, dtype=torch.float32))
        mean = inputs.mean(-1, keepdim=True)
        std = inputs.std(-1, keepdim=True, unbiased=True)
        return torch.relu(inputs - (mean + std * mult.to(inputs.dtype)))

    for mod in model.modules():
        if isinstance(mod, mg.Gemma3nTextMLP):
            mod._gaussian_topk = types.MethodType(topk_unbiased, mod)


def strip_kv_shared(src: Path, dst: Path, first_shared: int) -> int:
    """Copy a checkpoint without k_proj/v_proj/k_norm of layers >= first_shared (g3n make-random's layout)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name != "model.safetensors" and f.is_file():
            shutil.copy(f, dst / f.name)
    raw = (src / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    keep, dropped = {}, 0
    for k, v in header.items():
        if k == "__metadata__":
            continue
        parts = k.split(".")
        if "layers" in parts:
            li = int(parts[parts.index("layers") + 1])
            if li >= first_shared and any(x in k for x in ("k_proj", "v_proj", "k_norm")):
                dropped += 1
                continue
        keep[k] = v
    blobs, off, newh = [], 0, {}
    for k, v in keep.items():
        b = raw[base + v["data_offsets"][0]: base + v["data_offsets"][1]]
        newh[k] = dict(dtype=v["dtype"], shape=v["shape"], data_offsets=[off, off + len(b)])
        blobs.append(b)
        off += len(b)
    if "__metadata__" in header:
        newh["__metadata__"] = header["__metadata__"]
    hb = json.dumps(newh).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(dst / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
    return dropped


def llama_logits(path: Path, ids: list[int], kv_type: str = "f32") -> np.ndarray:
    """Run in a subprocess: llama.cpp state stays out of this process, and a crash is reported, not fatal."""
    code = (
        "import sys, json, numpy as np, llama_cpp\n"
        "ids = json.loads(sys.argv[2])\n"
        "kv = dict(type_k=0, type_v=0) if sys.argv[4] == 'f32' else {}\n"
        "llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, n_batch=256, n_ubatch=256, n_threads=2,\n"
        "                      logits_all=True, verbose=False, **kv)\n"
        "llm.eval(ids)\n"
        "np.save(sys.argv[3], np.array(llm.scores[:len(ids)], dtype=np.float32))\n"
    )
    outp = path.with_suffix(".logits.npy")
    r = subprocess.run([sys.executable, "-c", code, str(path), json.dumps(ids), str(outp), kv_type], capture_output=True,
                       text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"llama.cpp failed on {path.name}: {r.stderr[-2000:]}")
    return np.load(outp)


def compare(ref: np.ndarray, got: np.ndarray) -> dict:
    assert ref.shape == got.shape, (ref.shape, got.shape)
    d = np.abs(ref - got)
    top_ref, top_got = ref.argmax(-1), got.argmax(-1)
    srt = np.sort(ref, axis=-1)
    margin = srt[:, -1] - srt[:, -2]
    disagree = np.nonzero(top_ref != top_got)[0]
    return dict(
        top1_equal=f"{int((top_ref == top_got).sum())}/{ref.shape[0]}",
        max_abs_delta=round(float(d.max()), 5),
        mean_abs_delta=round(float(d.mean()), 6),
        # (position, reference top-1/top-2 margin) where the top-1 differs
        disagree=[(int(i), round(float(margin[i]), 4)) for i in disagree[:12]],
    )


def recipe_check(f16: Path, mine: Path, out: Path, ftype: str) -> dict:
    """llama.cpp's own llama_model_quantize (the llama-quantize recipe) on our F16 file vs our Q4_0 file."""
    code = (
        "import sys, llama_cpp\n"
        "p = llama_cpp.llama_model_quantize_default_params()\n"
        "p.ftype = int(sys.argv[3])\n"  # LLAMA_FTYPE_MOSTLY_Q4_0 = 2, Q8_0 = 7
        "p.nthread = 2\n"
        "rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p)\n"
        "sys.exit(rc)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(f16), str(out), str(int(conv.FILE_TYPES[ftype]))],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        return dict(ok=False, error=r.stderr[-1500:])
    import gguf

    def types(p):
        return {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(p)).tensors}

    a, b = types(out), types(mine)
    diff = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
    summary: dict[str, dict[str, int]] = {}
    for k, v in a.items():
        g = "blk.*." + k.split(".")[2] if k.startswith("blk.") else k
        summary.setdefault(g, {}).setdefault(v, 0)
        summary[g][v] += 1
    return dict(ok=not diff, differences=diff, llama_quantize_types=summary)


def run_case(name: str, work: Path, seed: int, report: dict) -> None:
    t0 = time.time()
    d = work / name
    shutil.rmtree(d, ignore_errors=True)
    ids, refs = build(name, d / "hf", seed)
    if name == "realvocab":
        tok = work / "tiny" / "tokenizer.model"
        if not tok.is_file():
            subprocess.run([str(REPO / "build" / "release" / "g3n"), "make-random", "--preset", "tiny", "--out",
                            str(work / "tiny")], check=True, capture_output=True)
        shutil.copy(tok, d / "hf" / "tokenizer.model")
    ref = refs["hf_f32"]
    case: dict = dict(prompt_len=len(ids), seed=seed, ref_logit_std=round(float(ref.std(-1).mean()), 3),
                      conditioning_hf_f32_vs_f64=compare(ref, refs["hf_f64"]))
    files = {}
    for ft in ("f32", "f16", "q8_0", "q4_0"):
        out = d / f"{name}-{ft}.gguf"
        s = conv.convert(d / "hf", out, ft, jobs=2, embed_q8=False, allow_mismatch=False, quiet=True)
        files[ft] = out
        got = llama_logits(out, ids, kv_type="f32")
        c = dict(token_embd=s["token_embd_type"], vs_hf_f32=compare(ref, got))
        if ft in ("f32", "f16"):
            c["vs_hf_f32_ggml_numerics"] = compare(refs["hf_f32_ggml_numerics"], got)
        if ft == "f32":
            c["f16_kv_cache_vs_hf_f32"] = compare(ref, llama_logits(out, ids, kv_type="f16"))
        case[ft] = c
    case["tokenizer"] = s["tokenizer"]
    case["n_vocab"] = s["n_vocab"]
    if name == "kvshare22":
        dropped = strip_kv_shared(d / "hf", d / "hf_stripped", first_shared=20)
        out = d / f"{name}-stripped-f32.gguf"
        s = conv.convert(d / "hf_stripped", out, "f32", jobs=2, embed_q8=False, allow_mismatch=False, quiet=True)
        got = llama_logits(out, ids)
        same = llama_logits(files["f32"], ids)
        case["without_kv_shared_weights"] = dict(tensors_removed_from_checkpoint=dropped,
                                                 zero_filled=s["zero_filled"],
                                                 max_abs_delta_vs_full=float(np.abs(got - same).max()))
    case["recipe"] = {ft: recipe_check(files["f16"], files[ft], d / f"{name}-llamaquant-{ft}.gguf", ft)
                      for ft in ("q8_0", "q4_0")}
    case["seconds"] = round(time.time() - t0, 1)
    report[name] = case


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/work/models/bench/verify"))
    ap.add_argument("--case", action="append", choices=["kvshare22", "realvocab"])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the models and GGUF files")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    for name in a.case or ["kvshare22", "realvocab"]:
        run_case(name, a.work, a.seed, report)
        print(f"[{name}] done in {report[name]['seconds']} s", file=sys.stderr, flush=True)
    if not a.keep:
        for name in report:
            shutil.rmtree(a.work / name, ignore_errors=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
