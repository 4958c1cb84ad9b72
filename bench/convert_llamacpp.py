#!/usr/bin/env python3
"""Convert a Hugging Face Gemma 3n text checkpoint into a GGUF file that llama.cpp loads as `gemma3n`.

    python3 bench/convert_llamacpp.py CHECKPOINT_DIR --out FILE.gguf [--type f32|f16|q8_0|q4_0] [--jobs N]

CHECKPOINT_DIR is a Hugging Face layout directory: config.json (model_type gemma3n_text, or gemma3n with a
text_config), model.safetensors (or model.safetensors.index.json + shards; bf16/f16/f32) with names
`model.layers.N.*` (Gemma3nForCausalLM) or `model.language_model.layers.N.*` (Gemma3nForConditionalGeneration;
the vision/audio towers are skipped), and tokenizer.model (SentencePiece). Without a tokenizer.model a small
synthetic byte-level vocabulary is written (only useful for small test models that are fed token ids).

What llama.cpp needs (checked against ggml-org/llama.cpp src/models/gemma3n.cpp, llama-hparams.h,
llama-model-loader.cpp, llama-quant.cpp and convert_hf_to_gguf.py Gemma3NModel; see bench/README.md):

* tensor names/shapes as in `llama_model_gemma3n::load_arch_tensors`; no missing and no extra tensors.
  `altup_proj` / `altup_unembd_proj` are the three HF matrices stacked (ne = {D, D, 3}).
* every layer needs attn_k / attn_v / attn_k_norm, even the KV-shared ones (llama.cpp never reads them there).
  A checkpoint that omits them (g3n make-random does) gets zeros (k/v) and ones (k_norm) for those layers.
* token_embd and per_layer_token_embd must have the same number of rows as the token list. Like upstream's
  converter we keep all `vocab_size` (262400) rows of embed_tokens and pad the PLE table (262144 rows) up to
  it; upstream pads with zero rows, we repeat row 0 (the <pad> row), which is what transformers does for
  ids >= vocab_size_per_layer_input, so logits match transformers for those ids too. The token list is the
  SentencePiece model padded with `[PADn]` UNUSED tokens, as upstream does.
* llama.cpp hard-codes several Gemma 3n hyper-parameters instead of reading them: n_altup = 4,
  i_altup_act = 0, laurel_rank = 64, n_embd_altup (PLE width) = 256, KV computed by layers 0..19 only
  (n_layer_kv_from_start = 20), activation sparsity on layers 0..9 with std multiplier 1.6448536 (= 0.95),
  sliding-window period 5 (`sliding_window_pattern` is only read when it is a scalar), attention scale 1.0.
  A checkpoint that differs is refused (or converted anyway with --allow-mismatch, with a warning): the
  file would load but compute a different model.

Types (`--type`):
  f32   every tensor F32 (for exact comparisons)
  f16   matrices F16, norms and small AltUp tensors F32
  q8_0  matrices Q8_0; altup_proj/altup_unembd_proj/laurel/per_layer_model_proj F16 (llama-quantize never
        quantizes names containing "altup", "laurel" or "per_layer_model_proj"); norms and the tiny AltUp
        router/coefficients F32
  q4_0  as q8_0 with Q4_0, except token_embd (the tied LM head) and per_layer_token_embd, which the installed
        llama.cpp's llama_model_quantize makes Q6_K (checked by bench/verify_llamacpp.py; upstream's
        llama-quant.cpp that we read keeps per_layer_token_embd at the base type, the installed build does
        not). gguf.quants cannot produce Q6_K, so those two are quantised with ggml's own ggml_quantize_chunk
        from the libggml-base.so that llama-cpp-python ships (Q8_0 instead, with a warning, if that library
        cannot be loaded, or with --embed-q8). Rows that are not a whole number of Q6_K blocks (256) fall
        back to Q8_0, as llama-quantize does.
Matrices are quantised with gguf.quants.quantize, in row chunks, in --jobs worker processes, and streamed to
the output so memory stays bounded (about jobs x 2 x 64 MiB).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import math
import multiprocessing as mp
import os
import struct
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

ARCH = "gemma3n"
CONVERTER_VERSION = 4  # bump when the output changes (compare.py caches converted files by it)

# llama.cpp hard-codes (src/llama-hparams.h defaults, src/models/gemma3n.cpp)
LCPP_N_ALTUP = 4
LCPP_ALTUP_ACT = 0
LCPP_LAUREL_RANK = 64
LCPP_PLE_WIDTH = 256
LCPP_KV_FROM_START = 20
LCPP_SPARSE_LAYERS = 10
LCPP_SWA_PERIOD = 5

CHUNK_ELEMS = 16 * 1024 * 1024  # float32 elements per work item (64 MiB)


# ----------------------------------------------------------------------------------------------------------
# safetensors (read-only, memory-mapped; bf16 is not a numpy dtype so we decode it ourselves)
# ----------------------------------------------------------------------------------------------------------

_ST_DTYPES = {"BF16": 2, "F16": 2, "F32": 4}


class SafeTensors:
    def __init__(self, ckpt: Path):
        files: list[Path]
        idx = ckpt / "model.safetensors.index.json"
        if idx.is_file():
            wm = json.loads(idx.read_text())["weight_map"]
            files = sorted({ckpt / f for f in wm.values()})
        elif (ckpt / "model.safetensors").is_file():
            files = [ckpt / "model.safetensors"]
        else:
            files = sorted(ckpt.glob("*.safetensors"))
        if not files:
            raise SystemExit(f"no safetensors files in {ckpt}")
        self.entries: dict[str, tuple[str, int, str, tuple[int, ...]]] = {}
        for f in files:
            with open(f, "rb") as fh:
                n = struct.unpack("<Q", fh.read(8))[0]
                header = json.loads(fh.read(n))
            base = 8 + n
            for name, e in header.items():
                if name == "__metadata__":
                    continue
                if e["dtype"] not in _ST_DTYPES:
                    continue  # e.g. int64 buffers of the vision tower
                self.entries[name] = (str(f), base + e["data_offsets"][0], e["dtype"], tuple(e["shape"]))
        self._maps: dict[str, np.memmap] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][3]

    def rows(self, name: str, r0: int, r1: int) -> np.ndarray:
        """Rows [r0, r1) of the tensor viewed as 2-D [rows, last_dim], as float32."""
        path, off, dt, shape = self.entries[name]
        m = self._maps.get(path)
        if m is None:
            m = np.memmap(path, dtype=np.uint8, mode="r")
            self._maps[path] = m
        cols = shape[-1] if shape else 1
        esz = _ST_DTYPES[dt]
        raw = m[off + r0 * cols * esz: off + r1 * cols * esz]
        if dt == "BF16":
            u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            out = u.view(np.float32)
        elif dt == "F16":
            out = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
        else:
            out = np.frombuffer(raw, dtype=np.float32).copy()
        return out.reshape(r1 - r0, cols)


# ----------------------------------------------------------------------------------------------------------
# Q6_K through ggml's own quantiser (gguf.quants only dequantises K-quants)
# ----------------------------------------------------------------------------------------------------------

_GGML = None


def ggml_lib():
    global _GGML
    if _GGML is None:
        spec = importlib.util.find_spec("llama_cpp")
        if spec is None or not spec.submodule_search_locations:
            raise OSError("llama_cpp is not installed")
        libdir = Path(list(spec.submodule_search_locations)[0]) / "lib"
        cands = sorted(libdir.glob("libggml-base.so*")) + sorted(libdir.glob("libggml.so*"))
        last: Exception | None = None
        for c in cands:
            try:
                lib = ctypes.CDLL(str(c))
                f = lib.ggml_quantize_chunk
                f.restype = ctypes.c_size_t
                f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                              ctypes.c_int64, ctypes.c_void_p]
                _GGML = lib
                break
            except (OSError, AttributeError) as e:
                last = e
        if _GGML is None:
            raise OSError(f"cannot load ggml_quantize_chunk from {libdir}: {last}")
    return _GGML


def ggml_quantize(a: np.ndarray, qtype: QT) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float32)
    rows, cols = a.shape
    blk, tsz = gguf.GGML_QUANT_SIZES[qtype]
    out = np.empty((rows, cols // blk * tsz), dtype=np.uint8)
    n = ggml_lib().ggml_quantize_chunk(int(qtype), a.ctypes.data, out.ctypes.data, 0, rows, cols, None)
    assert n == out.nbytes, (n, out.nbytes)
    return out


def quantize_rows(a: np.ndarray, qtype: QT) -> bytes:
    if qtype == QT.F32:
        return a.astype(np.float32, copy=False).tobytes()
    if qtype == QT.F16:
        return a.astype(np.float16).tobytes()
    if qtype == QT.Q6_K:
        return ggml_quantize(a, qtype).tobytes()
    return gguf.quants.quantize(a, qtype).tobytes()


# ----------------------------------------------------------------------------------------------------------
# The plan: every output tensor is a vertical concatenation of row segments
# ----------------------------------------------------------------------------------------------------------
# segment = ("src", hf_name, r0, r1) | ("fill", value, nrows) | ("rep", hf_name, row, nrows)


class OutTensor:
    def __init__(self, name: str, np_shape: tuple[int, ...], qtype: QT, segments: list[tuple]):
        self.name, self.np_shape, self.qtype, self.segments = name, tuple(np_shape), qtype, segments
        self.cols = np_shape[-1]
        self.rows = int(np.prod(np_shape[:-1])) if len(np_shape) > 1 else 1
        n = 0
        for s in segments:
            n += (s[3] - s[2]) if s[0] == "src" else s[-1]
        assert n == self.rows, (name, n, self.rows)
        # llama-quantize's fallbacks for rows that are not a whole number of blocks: Q6_K -> Q8_0, else F16
        if self.cols % gguf.GGML_QUANT_SIZES[qtype][0] and qtype == QT.Q6_K:
            qtype = self.qtype = QT.Q8_0
        if self.cols % gguf.GGML_QUANT_SIZES[qtype][0]:
            qtype = self.qtype = QT.F16
        blk, tsz = gguf.GGML_QUANT_SIZES[qtype]
        self.row_bytes = self.cols // blk * tsz
        self.nbytes = self.rows * self.row_bytes


def _slice_segments(segs: list[tuple], r0: int, r1: int) -> list[tuple]:
    """The part of a segment list covering output rows [r0, r1)."""
    out, pos = [], 0
    for s in segs:
        n = (s[3] - s[2]) if s[0] == "src" else s[-1]
        a, b = max(r0, pos), min(r1, pos + n)
        if a < b:
            if s[0] == "src":
                out.append(("src", s[1], s[2] + a - pos, s[2] + b - pos))
            elif s[0] == "fill":
                out.append(("fill", s[1], b - a))
            else:
                out.append(("rep", s[1], s[2], b - a))
        pos += n
    return out


_ST: SafeTensors | None = None


def _worker_init(ckpt: str) -> None:
    global _ST
    _ST = SafeTensors(Path(ckpt))


def _work(item: tuple) -> bytes:
    segs, cols, qtype = item
    parts = []
    for s in segs:
        if s[0] == "src":
            parts.append(_ST.rows(s[1], s[2], s[3]))
        elif s[0] == "fill":
            parts.append(np.full((s[2], cols), s[1], dtype=np.float32))
        else:
            parts.append(np.repeat(_ST.rows(s[1], s[2], s[2] + 1), s[3], axis=0))
    a = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    return quantize_rows(a, QT(qtype))


# ----------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------


def load_text_config(ckpt: Path) -> dict:
    cfg = json.loads((ckpt / "config.json").read_text())
    if cfg.get("model_type") == "gemma3n" or "text_config" in cfg:
        tc = dict(cfg["text_config"])
        for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
            tc.setdefault(k, cfg.get(k))
        cfg = tc
    if cfg.get("model_type") not in ("gemma3n_text", None):
        raise SystemExit(f"not a Gemma 3n text config: model_type={cfg.get('model_type')}")
    L = cfg["num_hidden_layers"]
    cfg.setdefault("layer_types", ["full_attention" if (i + 1) % 5 == 0 else "sliding_attention" for i in range(L)])
    cfg.setdefault("activation_sparsity_pattern", [0.95] * min(10, L) + [0.0] * max(0, L - 10))
    rp = cfg.get("rope_parameters") or {}
    if "full_attention" in rp:
        cfg["_theta_full"] = float(rp["full_attention"].get("rope_theta", 1e6))
        cfg["_theta_swa"] = float(rp.get("sliding_attention", {}).get("rope_theta", 1e4))
    else:
        cfg["_theta_full"] = float(cfg.get("rope_theta", 1e6))
        cfg["_theta_swa"] = float(cfg.get("rope_local_base_freq", 1e4))
    return cfg


def check_llamacpp_assumptions(cfg: dict) -> tuple[list[str], list[str]]:
    """(fatal, behavioural) differences between the checkpoint and what llama.cpp hard-codes."""
    fatal, behav = [], []
    L = cfg["num_hidden_layers"]
    if cfg.get("altup_num_inputs", 4) != LCPP_N_ALTUP:
        fatal.append(f"altup_num_inputs={cfg.get('altup_num_inputs')} (llama.cpp: 4)")
    if cfg.get("laurel_rank", 64) != LCPP_LAUREL_RANK:
        fatal.append(f"laurel_rank={cfg.get('laurel_rank')} (llama.cpp: 64)")
    if cfg.get("hidden_size_per_layer_input", 256) != LCPP_PLE_WIDTH:
        fatal.append(f"hidden_size_per_layer_input={cfg.get('hidden_size_per_layer_input')} (llama.cpp: 256)")
    ffn = cfg["intermediate_size"]
    if isinstance(ffn, list) and len(set(ffn)) != 1:
        fatal.append(f"per-layer intermediate_size {ffn} (llama.cpp gemma3n uses n_ff of layer 0 for every layer)")
    if cfg.get("altup_active_idx", 0) != LCPP_ALTUP_ACT:
        behav.append(f"altup_active_idx={cfg.get('altup_active_idx')} (llama.cpp: 0)")
    want_types = ["full_attention" if i % LCPP_SWA_PERIOD == LCPP_SWA_PERIOD - 1 else "sliding_attention" for i in range(L)]
    if list(cfg["layer_types"]) != want_types:
        behav.append("layer_types is not the period-5 pattern llama.cpp assumes")
    want_shared = max(0, L - LCPP_KV_FROM_START)
    if cfg.get("num_kv_shared_layers", 0) != want_shared:
        behav.append(f"num_kv_shared_layers={cfg.get('num_kv_shared_layers')} but llama.cpp computes KV in layers "
                     f"0..{LCPP_KV_FROM_START - 1} only (={want_shared} shared for {L} layers)")
    sp = [float(x) for x in cfg["activation_sparsity_pattern"]]
    want_sp = [0.95 if i < LCPP_SPARSE_LAYERS else 0.0 for i in range(L)]
    if any(abs(a - b) > 1e-6 for a, b in zip(sp, want_sp)):
        behav.append(f"activation_sparsity_pattern {sp} (llama.cpp: 0.95 on layers 0..9, none after)")
    if cfg.get("final_logit_softcapping") is None:
        behav.append("final_logit_softcapping is None (llama.cpp always soft-caps, default 30)")
    if cfg.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        behav.append(f"hidden_activation={cfg.get('hidden_activation')} (llama.cpp: gelu tanh)")
    for k in ("attention_bias",):
        if cfg.get(k):
            fatal.append(f"{k}=true")
    return fatal, behav


# ----------------------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------------------


def build_vocab(ckpt: Path, n_vocab: int) -> tuple[list[bytes], list[float], list[int], dict]:
    T = gguf.TokenType
    tok_path = ckpt / "tokenizer.model"
    tokens: list[bytes] = []
    scores: list[float] = []
    types: list[int] = []
    info: dict = {}
    if tok_path.is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(tok_path))
        n = sp.get_piece_size()
        if n > n_vocab:
            raise SystemExit(f"tokenizer.model has {n} pieces but the model only {n_vocab} embedding rows")
        for i in range(n):
            tokens.append(sp.id_to_piece(i).encode("utf-8"))
            scores.append(float(sp.get_score(i)))
            if sp.is_unknown(i):
                types.append(T.UNKNOWN)
            elif sp.is_control(i):
                types.append(T.CONTROL)
            elif sp.is_unused(i):
                types.append(T.UNUSED)
            elif sp.is_byte(i):
                types.append(T.BYTE)
            else:
                types.append(T.NORMAL)
        # user-defined pieces (SentencePiece type 4) from the model proto, as upstream does
        try:
            from sentencepiece import sentencepiece_model_pb2 as pb

            mp_ = pb.ModelProto()
            mp_.ParseFromString(tok_path.read_bytes())
            for i, p in enumerate(mp_.pieces):
                if p.type == pb.ModelProto.SentencePiece.USER_DEFINED:
                    types[i] = T.USER_DEFINED
        except Exception:
            pass
        info = dict(source="tokenizer.model", pieces=n, unk=sp.unk_id())
    else:
        # minimal byte-fallback SPM vocabulary for small test models (fed with token ids only)
        if n_vocab < 4 + 256 + 1:
            raise SystemExit("no tokenizer.model and vocab too small for a synthetic byte vocabulary")
        for i, (t, ty) in enumerate([("<pad>", T.CONTROL), ("<eos>", T.CONTROL), ("<bos>", T.CONTROL),
                                      ("<unk>", T.UNKNOWN)]):
            tokens.append(t.encode())
            scores.append(0.0)
            types.append(ty)
        for b in range(256):
            tokens.append(f"<0x{b:02X}>".encode())
            scores.append(0.0)
            types.append(T.BYTE)
        k = 0
        while len(tokens) < n_vocab:
            tokens.append(f"\u2581t{k}".encode())
            scores.append(-float(k))
            types.append(T.NORMAL)
            k += 1
        info = dict(source="synthetic byte vocabulary (no tokenizer.model)", pieces=n_vocab, unk=3)
    n_pad = n_vocab - len(tokens)
    for i in range(n_pad):  # upstream: [PAD{i}] UNUSED tokens up to vocab_size
        tokens.append(f"[PAD{len(tokens)}]".encode())
        scores.append(-1000.0)
        types.append(T.UNUSED)
    info["padded"] = n_pad
    return tokens, scores, types, info


# ----------------------------------------------------------------------------------------------------------
# Build the plan
# ----------------------------------------------------------------------------------------------------------


def choose_types(kind: str, ftype: str, embed_q8: bool) -> QT:
    """kind: norm | small | keep | embd | ple | mat"""
    if ftype == "f32" or kind in ("norm", "small"):
        return QT.F32
    if ftype == "f16" or kind == "keep":
        return QT.F16
    q = QT.Q8_0 if ftype == "q8_0" else QT.Q4_0
    if kind in ("embd", "ple") and ftype == "q4_0":
        return QT.Q8_0 if embed_q8 else QT.Q6_K
    return q


def build_plan(st: SafeTensors, cfg: dict, ftype: str, embed_q8: bool) -> tuple[list[OutTensor], dict]:
    names = list(st.entries)
    if any(n.startswith("model.language_model.") for n in names):
        pre = "model.language_model."
    elif any(n.startswith("model.layers.") for n in names):
        pre = "model."
    else:
        raise SystemExit("cannot find model.layers.* or model.language_model.layers.* tensors")
    L = cfg["num_hidden_layers"]
    D = cfg["hidden_size"]
    H, KV, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg.get("head_dim", D // cfg["num_attention_heads"])
    V = st.shape(pre + "embed_tokens.weight")[0]
    notes: dict = {"prefix": pre, "zero_filled": [], "n_vocab": V}

    plan: list[OutTensor] = []
    used: set[str] = set()

    def src(hf: str) -> list[tuple]:
        used.add(hf)
        shp = st.shape(hf)
        rows = int(np.prod(shp[:-1])) if len(shp) > 1 else 1
        return [("src", hf, 0, rows)]

    def add(name: str, hf: str, kind: str, expect_np: tuple[int, ...] | None = None):
        full = pre + hf
        if full not in st:
            raise SystemExit(f"missing tensor {full}")
        shp = st.shape(full)
        if expect_np is not None and tuple(shp) != tuple(expect_np):
            raise SystemExit(f"{full}: shape {shp}, expected {expect_np}")
        plan.append(OutTensor(name, shp, choose_types(kind, ftype, embed_q8), src(full)))

    # embeddings (tied LM head: no output.weight; llama.cpp then uses token_embd as the output matrix)
    untied = "lm_head.weight" in st and not cfg.get("tie_word_embeddings", True)
    # llama-quantize gives the output matrix Q6_K; token_embd gets it only when it doubles as the output
    add("token_embd.weight", "embed_tokens.weight", "ple" if untied else "embd")
    if untied:
        plan.append(OutTensor("output.weight", st.shape("lm_head.weight"), choose_types("embd", ftype, embed_q8),
                              src("lm_head.weight")))
    ple = pre + "embed_tokens_per_layer.weight"
    Vp, Wp = st.shape(ple)
    segs = src(ple)
    if Vp < V:
        segs = segs + [("rep", ple, 0, V - Vp)]
        notes["ple_padded_rows"] = V - Vp
    elif Vp > V:
        raise SystemExit(f"PLE table has more rows ({Vp}) than embed_tokens ({V})")
    plan.append(OutTensor("per_layer_token_embd.weight", (V, Wp), choose_types("ple", ftype, embed_q8), segs))
    add("per_layer_model_proj.weight", "per_layer_model_projection.weight", "keep")
    add("per_layer_proj_norm.weight", "per_layer_projection_norm.weight", "norm")
    for out, hf in (("altup_proj.weight", "altup_projections"), ("altup_unembd_proj.weight", "altup_unembed_projections")):
        parts = []
        for k in range(LCPP_N_ALTUP - 1):
            parts += src(f"{pre}{hf}.{k}.weight")
        plan.append(OutTensor(out, (LCPP_N_ALTUP - 1, D, D), choose_types("keep", ftype, embed_q8), parts))
    add("output_norm.weight", "norm.weight", "norm")

    lm = {
        "attn_norm": ("input_layernorm.weight", "norm"),
        "attn_q": ("self_attn.q_proj.weight", "mat"),
        "attn_k": ("self_attn.k_proj.weight", "mat"),
        "attn_v": ("self_attn.v_proj.weight", "mat"),
        "attn_output": ("self_attn.o_proj.weight", "mat"),
        "attn_q_norm": ("self_attn.q_norm.weight", "norm"),
        "attn_k_norm": ("self_attn.k_norm.weight", "norm"),
        "post_attention_norm": ("post_attention_layernorm.weight", "norm"),
        "ffn_norm": ("pre_feedforward_layernorm.weight", "norm"),
        "ffn_gate": ("mlp.gate_proj.weight", "mat"),
        "ffn_up": ("mlp.up_proj.weight", "mat"),
        "ffn_down": ("mlp.down_proj.weight", "mat"),
        "post_ffw_norm": ("post_feedforward_layernorm.weight", "norm"),
        "inp_gate": ("per_layer_input_gate.weight", "mat"),
        "proj": ("per_layer_projection.weight", "mat"),
        "post_norm": ("post_per_layer_input_norm.weight", "norm"),
        "altup_correct_coef": ("altup.correction_coefs.weight", "small"),
        "altup_correct_scale": ("altup.correct_output_scale", "small"),
        "altup_predict_coef": ("altup.prediction_coefs.weight", "small"),
        "altup_router": ("altup.modality_router.weight", "small"),
        "altup_router_norm": ("altup.router_norm.weight", "norm"),
        "laurel_l": ("laurel.linear_left.weight", "keep"),
        "laurel_r": ("laurel.linear_right.weight", "keep"),
        "laurel_post_norm": ("laurel.post_laurel_norm.weight", "norm"),
    }
    fill_shape = {"attn_k": (KV * hd, D), "attn_v": (KV * hd, D), "attn_k_norm": (hd,)}
    for i in range(L):
        for g, (hf, kind) in lm.items():
            full = f"{pre}layers.{i}.{hf}"
            name = f"blk.{i}.{g}.weight"
            if full not in st and g in fill_shape:
                shp = fill_shape[g]
                val = 1.0 if g == "attn_k_norm" else 0.0
                rows = shp[0] if len(shp) > 1 else 1
                plan.append(OutTensor(name, shp, choose_types(kind, ftype, embed_q8), [("fill", val, rows)]))
                notes["zero_filled"].append(name)
                continue
            if full not in st:
                raise SystemExit(f"missing tensor {full}")
            plan.append(OutTensor(name, st.shape(full), choose_types(kind, ftype, embed_q8), src(full)))

    # every text tensor must have been used (llama.cpp refuses extra tensors, so we must not silently drop any)
    other = ("model.vision_tower", "model.audio_tower", "model.embed_vision", "model.embed_audio")
    text = {n for n in names if n.startswith(pre) and not n.startswith(other)}
    unused = sorted(text - used)
    if unused:
        raise SystemExit(f"unmapped tensors in the checkpoint: {unused[:10]}{' ...' if len(unused) > 10 else ''}")
    return plan, notes


# ----------------------------------------------------------------------------------------------------------
# Write
# ----------------------------------------------------------------------------------------------------------

FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}


def write_metadata(w: gguf.GGUFWriter, cfg: dict, ftype: str, vocab, name: str) -> None:
    L = cfg["num_hidden_layers"]
    tokens, scores, types, _ = vocab
    w.add_name(name)
    w.add_file_type(int(FILE_TYPES[ftype]))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(int(cfg.get("max_position_embeddings", 32768)))
    w.add_embedding_length(int(cfg["hidden_size"]))
    w.add_block_count(L)
    ffn = cfg["intermediate_size"]
    w.add_feed_forward_length([int(x) for x in ffn] if isinstance(ffn, list) else int(ffn))
    w.add_head_count(int(cfg["num_attention_heads"]))
    w.add_head_count_kv(int(cfg["num_key_value_heads"]))
    hd = int(cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"]))
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    w.add_rope_freq_base(cfg["_theta_full"])
    w.add_rope_freq_base_swa(cfg["_theta_swa"])
    w.add_sliding_window(int(cfg["sliding_window"]))
    w.add_sliding_window_pattern([t == "sliding_attention" for t in cfg["layer_types"]])
    if cfg.get("final_logit_softcapping") is not None:
        w.add_final_logit_softcapping(float(cfg["final_logit_softcapping"]))
    w.add_altup_active_idx(int(cfg.get("altup_active_idx", 0)))
    w.add_altup_num_inputs(int(cfg.get("altup_num_inputs", 4)))
    w.add_embedding_length_per_layer_input(int(cfg.get("hidden_size_per_layer_input", 256)))
    w.add_shared_kv_layers(int(cfg.get("num_kv_shared_layers", 0)))
    from statistics import NormalDist

    w.add_activation_sparsity_scale([NormalDist().inv_cdf(float(s)) if s > 0 else -math.inf
                                     for s in cfg["activation_sparsity_pattern"]])
    # tokenizer
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types([int(t) for t in types])
    w.add_bos_token_id(int(cfg.get("bos_token_id") or 2))
    eos = cfg.get("eos_token_id", 1)
    w.add_eos_token_id(int(eos[0] if isinstance(eos, list) else eos))
    w.add_pad_token_id(int(cfg.get("pad_token_id") or 0))
    w.add_unk_token_id(int(vocab[3].get("unk", 3)))
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)


def convert(ckpt: Path, out: Path, ftype: str, jobs: int, embed_q8: bool, allow_mismatch: bool,
            quiet: bool = False) -> dict:
    t0 = time.time()
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    cfg = load_text_config(ckpt)
    fatal, behav = check_llamacpp_assumptions(cfg)
    if fatal:
        raise SystemExit("llama.cpp cannot load this checkpoint as gemma3n: " + "; ".join(fatal))
    if behav:
        msg = "llama.cpp would compute a different model: " + "; ".join(behav)
        if not allow_mismatch:
            raise SystemExit(msg + " (use --allow-mismatch to convert anyway)")
        log("WARNING: " + msg)

    if ftype == "q4_0" and not embed_q8:
        try:
            ggml_lib()
        except OSError as e:
            log(f"WARNING: no ggml library for Q6_K ({e}); token_embd will be Q8_0")
            embed_q8 = True

    st = SafeTensors(ckpt)
    plan, notes = build_plan(st, cfg, ftype, embed_q8)
    vocab = build_vocab(ckpt, notes["n_vocab"])
    if notes["zero_filled"]:
        log(f"note: {len(notes['zero_filled'])} tensors of KV-shared layers are absent from the checkpoint and "
            f"written as zeros/ones (llama.cpp loads but never reads them): {notes['zero_filled'][:3]} ...")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    w = gguf.GGUFWriter(str(tmp), ARCH)
    write_metadata(w, cfg, ftype, vocab, ckpt.name)
    for t in plan:
        w.add_tensor_info(t.name, t.np_shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    fout = w.fout[0]
    align = w.data_alignment

    # work items: row chunks of every tensor, in file order
    items: list[tuple[int, tuple]] = []
    for ti, t in enumerate(plan):
        step = max(1, CHUNK_ELEMS // t.cols)
        for r0 in range(0, t.rows, step):
            items.append((ti, (_slice_segments(t.segments, r0, min(t.rows, r0 + step)), t.cols, int(t.qtype))))

    total = sum(t.nbytes for t in plan)
    written = 0
    cur = -1
    cur_bytes = 0
    last_report = time.time()

    def emit(ti: int, data: bytes):
        nonlocal cur, cur_bytes, written, last_report
        if ti != cur:
            if cur >= 0:
                assert cur_bytes == plan[cur].nbytes, (plan[cur].name, cur_bytes, plan[cur].nbytes)
                fout.write(b"\0" * (gguf.GGUFWriter.ggml_pad(cur_bytes, align) - cur_bytes))
            pos = fout.tell()
            fout.write(b"\0" * (gguf.GGUFWriter.ggml_pad(pos, align) - pos))
            cur, cur_bytes = ti, 0
        fout.write(data)
        cur_bytes += len(data)
        written += len(data)
        if time.time() - last_report > 10:
            log(f"  {written / total * 100:5.1f}%  {plan[ti].name}  ({time.time() - t0:.0f} s)")
            last_report = time.time()

    if jobs <= 1:
        _worker_init(str(ckpt))
        for ti, it in items:
            emit(ti, _work(it))
    else:
        ctx = mp.get_context("fork")
        with ctx.Pool(jobs, initializer=_worker_init, initargs=(str(ckpt),)) as pool:
            window: deque = deque()
            it = iter(items)
            for _ in range(2 * jobs):
                nxt = next(it, None)
                if nxt is None:
                    break
                window.append((nxt[0], pool.apply_async(_work, (nxt[1],))))
            while window:
                ti, res = window.popleft()
                emit(ti, res.get())
                nxt = next(it, None)
                if nxt is not None:
                    window.append((nxt[0], pool.apply_async(_work, (nxt[1],))))
    assert cur_bytes == plan[cur].nbytes
    fout.write(b"\0" * (gguf.GGUFWriter.ggml_pad(cur_bytes, align) - cur_bytes))
    fout.flush()
    os.fsync(fout.fileno())
    fout.close()
    w.fout = None
    os.replace(tmp, out)

    by_type: dict[str, int] = {}
    for t in plan:
        by_type[t.qtype.name] = by_type.get(t.qtype.name, 0) + t.nbytes
    summary = dict(out=str(out), type=ftype, seconds=round(time.time() - t0, 1), file_bytes=out.stat().st_size,
                   tensors=len(plan), bytes_by_type=by_type, n_vocab=notes["n_vocab"],
                   tokenizer=vocab[3], zero_filled=len(notes["zero_filled"]),
                   ple_padded_rows=notes.get("ple_padded_rows", 0),
                   token_embd_type=plan[0].qtype.name, mismatches=behav, converter_version=CONVERTER_VERSION)
    summary["source"] = source_signature(ckpt)
    Path(str(out) + ".json").write_text(json.dumps(summary, indent=1))
    log(f"wrote {out} ({summary['file_bytes'] / 2**30:.2f} GiB, {len(plan)} tensors) in {summary['seconds']} s")
    return summary


def source_signature(ckpt: Path) -> dict:
    """What a cached conversion depends on (compare.py reuses a file whose sidecar .json matches)."""
    import hashlib

    files = {}
    for f in sorted(ckpt.iterdir()):
        if f.suffix in (".safetensors", ".json", ".model") and f.is_file():
            st_ = f.stat()
            files[f.name] = [st_.st_size, st_.st_mtime_ns]
    cfg = hashlib.sha256((ckpt / "config.json").read_bytes()).hexdigest()[:16]
    return dict(path=str(ckpt.resolve()), files=files, config_sha256=cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--type", choices=list(FILE_TYPES), default="f16")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    ap.add_argument("--embed-q8", action="store_true", help="q4_0: token_embd and per_layer_token_embd Q8_0 instead of Q6_K")
    ap.add_argument("--allow-mismatch", action="store_true",
                    help="convert even if the config differs from what llama.cpp hard-codes (see module doc)")
    ap.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    a = ap.parse_args()
    s = convert(a.checkpoint, a.out, a.type, a.jobs, a.embed_q8, a.allow_mismatch)
    if a.json:
        print(json.dumps(s, indent=2))


if __name__ == "__main__":
    main()
