"""Factory for small, fully randomised Gemma 3n checkpoints and their Hugging Face reference outputs.

Everything here is the *reference side* of the parity suite: it needs torch + transformers (+ timm for the
multimodal checkpoint) but never the g3n binary.

Why every parameter is re-randomised
------------------------------------
Hugging Face's ``_init_weights`` leaves ``altup.correct_output_scale`` at 0 (which multiplies the whole
per-layer-input branch by zero), every RMSNorm weight at 1, and the router/coefficient matrices tiny. A model
built that way would hide bugs in exactly the Gemma 3n specific paths (AltUp, PLE, norms). ``randomise_``
overwrites every text-path parameter:

* RMSNorm weights and ``correct_output_scale``:   1 + 0.2 * N(0, 1)
  (times POST_NORM_SCALE for the norms whose output joins the residual stream, QK_NORM_SCALE for q/k norms)
* ``altup.modality_router``:                      N(0, (ROUTER_GAIN * sqrt(D))^2) -> pre-tanh values ~ N(0, 0.4^2)
* ``altup.prediction_coefs`` / ``correction_coefs``: N(0, ALTUP_COEF_STD^2)
* token embeddings (tied LM head):                N(0, (LOGIT_STD / sqrt(D))^2) -> logit std over the vocab ~3
* per-layer (PLE) embeddings:                     N(0, 1 / P)  (then scaled by sqrt(P) in the model -> ~N(0, 1))
* multimodal hard-token embeddings:               N(0, 1)
* every other matrix [out, in]:                   N(0, 1 / in)

The vision / audio towers are left as Hugging Face initialises them: they are not on the text path.

Greedy margins
--------------
Random models can produce near-ties between the two best tokens, and some random instances are badly
conditioned (float32 rounding amplified through the layers). ``build_case`` tries seeds
``spec.seed, spec.seed + 1, ...`` (deterministically) and keeps the first one whose reference greedy run has a
top-1/top-2 gap of at least ``MIN_GREEDY_MARGIN`` at every step of every prompt, whose logits have a useful
spread, and whose float32 logits are within ``COND_TOL`` of the float64 run of the same weights. The seed
actually used is recorded in ``Case.seed``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

# --------------------------------------------------------------------------------------------------------------
# Constants shared with the tests
# --------------------------------------------------------------------------------------------------------------

N_GENERATE = 32  # greedy tokens compared per prompt
LOGIT_STD = 3.0  # target std of (pre-softcap) logits over the vocabulary
MIN_GREEDY_MARGIN = 5e-3  # required gap between the best and second-best reference logit at every greedy step
MAX_SEED_TRIES = 8
SOFTCAP = 30.0
# norms whose output is added to the residual stream get a larger scale so that the layers are not drowned by
# the (sqrt(D)-scaled) token embedding, which otherwise makes random models just repeat their last token
POST_NORMS = ("post_attention_layernorm", "post_feedforward_layernorm", "post_per_layer_input_norm", "post_laurel_norm")
POST_NORM_SCALE = 2.5
# Gentle gains elsewhere keep deep random models well conditioned (float32 vs float64 reference <= COND_TOL):
QK_NORM_SCALE = 0.6  # q_norm / k_norm weights: attention scores (scaling 1.0) ~ N(0, (0.36 * sqrt(head_dim))^2)
ROUTER_GAIN = 0.4  # altup.modality_router: pre-tanh router values ~ N(0, 0.4^2)
ALTUP_COEF_STD = 0.1  # altup prediction / correction coefficient matrices
# A seed is accepted only if the float32 reference is within COND_TOL of the same model run in float64, so that
# the 1e-3 parity tolerance is an order of magnitude above the reference's own rounding noise.
COND_TOL = 1e-4

REAL_VOCAB = 262_400
REAL_VOCAB_PER_LAYER_INPUT = 262_144
VISION_OFFSET = 262_144  # 262144 = <end_of_image>, 262145 = <image_soft_token>
AUDIO_OFFSET = 262_272  # 262272 = <end_of_audio>, 262273 = <audio_soft_token>

S = "sliding_attention"
F = "full_attention"


# --------------------------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PromptSpec:
    """A prompt: ``length`` ids, the first one is <bos>=2, then random text ids, with ``special`` ids spliced in
    at fixed positions (``special`` is a tuple of (position, id))."""

    name: str
    length: int
    special: tuple[tuple[int, int], ...] = ()
    # ids are drawn from [3, id_high); None = the text vocabulary (vocab_size_per_layer_input for real vocabs)
    id_high: int | None = None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    seed: int
    text: dict[str, Any]  # Gemma3nTextConfig kwargs on top of TEXT_DEFAULTS
    prompts: tuple[PromptSpec, ...]
    multimodal: bool = False  # Gemma3nForConditionalGeneration instead of Gemma3nForCausalLM
    bf16: bool = False  # also save a bfloat16 copy; the reference uses the bf16-rounded weights in float32
    what: str = ""  # one-line description for reports


TEXT_DEFAULTS: dict[str, Any] = dict(
    vocab_size=512,
    vocab_size_per_layer_input=512,
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    hidden_size_per_layer_input=16,
    laurel_rank=8,
    intermediate_size=128,
    num_kv_shared_layers=0,
    sliding_window=12,
    final_logit_softcapping=SOFTCAP,
    rms_norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh",
    altup_num_inputs=4,
    altup_active_idx=0,
    altup_correct_scale=True,
    max_position_embeddings=4096,
    pad_token_id=0,
    bos_token_id=2,
    eos_token_id=1,
    tie_word_embeddings=True,
)


def default_layer_types(n: int) -> list[str]:
    return [F if (i + 1) % 5 == 0 else S for i in range(n)]


def _mm_prompt_special() -> tuple[tuple[int, int], ...]:
    # vision ids [262144, 262272), audio ids [262272, 262400); boi/boa (255999/256000) are ordinary text ids.
    return (
        (3, 255_999),  # <start_of_image> (text id)
        (4, 262_145),  # <image_soft_token> (no pixel values: embedded by embed_vision like any vision id)
        (5, 262_150),
        (6, 262_200),
        (7, 262_271),  # last vision id
        (8, 262_144),  # <end_of_image>
        (15, 256_000),  # <start_of_audio> (text id)
        (16, 262_273),  # <audio_soft_token>
        (17, 262_300),
        (18, 262_399),  # last id of the vocabulary
        (19, 262_272),  # <end_of_audio>
        (30, 262_144),
        (31, 262_301),
        (40, 262_222),
    )


MODEL_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="base",
        seed=1000,
        what="5 layers, default pattern (4 sliding + 1 full), no KV sharing, no sparsity, window 12",
        text=dict(num_hidden_layers=5, sliding_window=12),
        prompts=(PromptSpec("long48", 48), PromptSpec("single", 1)),
    ),
    ModelSpec(
        name="kvshare",
        seed=2000,
        what="10 layers, default pattern, last 4 layers KV-shared (producers: 5 sliding, 4 full), window 12",
        text=dict(num_hidden_layers=10, num_kv_shared_layers=4, sliding_window=12),
        prompts=(PromptSpec("long48", 48), PromptSpec("single", 1)),
    ),
    ModelSpec(
        name="custom_types",
        seed=3000,
        what="7 layers [F,S,S,F,S,F,S], 2 KV-shared, D=48 (sqrt not exact), H=2/KV=1, head_dim 32 (H*hd != D), "
        "custom rope thetas, PLE vocab 512 < vocab 640 (ids >= 512 use PLE row 0), window 8",
        text=dict(
            num_hidden_layers=7,
            layer_types=[F, S, S, F, S, F, S],
            num_kv_shared_layers=2,
            hidden_size=48,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=32,
            hidden_size_per_layer_input=8,
            laurel_rank=4,
            vocab_size=640,
            vocab_size_per_layer_input=512,
            sliding_window=8,
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 5_000.0},
                "full_attention": {"rope_type": "default", "rope_theta": 250_000.0},
            },
        ),
        prompts=(PromptSpec("long40", 40, special=((10, 600), (11, 512), (25, 639))),),
    ),
    ModelSpec(
        name="three_layers",
        seed=4000,
        what="3 layers [F,S,S], D=32, H=8/KV=2, head_dim 8 (H*hd=64 != D), P=8, window 6",
        text=dict(
            num_hidden_layers=3,
            layer_types=[F, S, S],
            hidden_size=32,
            num_attention_heads=8,
            num_key_value_heads=2,
            head_dim=8,
            hidden_size_per_layer_input=8,
            laurel_rank=4,
            intermediate_size=96,
            sliding_window=6,
        ),
        prompts=(PromptSpec("long30", 30),),
    ),
    ModelSpec(
        name="sparsity",
        seed=5000,
        what="6 layers, intermediate 256, activation sparsity 0.95 on layers 0-2, window 16",
        text=dict(
            num_hidden_layers=6,
            intermediate_size=256,
            activation_sparsity_pattern=[0.95, 0.95, 0.95, 0.0, 0.0, 0.0],
            sliding_window=16,
        ),
        prompts=(PromptSpec("long40", 40),),
    ),
    ModelSpec(
        name="ffn_widths",
        seed=6000,
        what="6 layers, per-layer intermediate_size [64,256,96,160,128,200], no sparsity, window 12",
        text=dict(
            num_hidden_layers=6,
            intermediate_size=[64, 256, 96, 160, 128, 200],
            sliding_window=12,
        ),
        prompts=(PromptSpec("long40", 40),),
    ),
    ModelSpec(
        name="e2b_like",
        seed=7000,
        what="10 layers default pattern, 4 KV-shared, sparsity 0.95 on layers 0-3, per-layer widths, window 8",
        text=dict(
            num_hidden_layers=10,
            num_kv_shared_layers=4,
            intermediate_size=[192, 160, 224, 128, 256, 128, 96, 192, 128, 160],
            activation_sparsity_pattern=[0.95] * 4 + [0.0] * 6,
            sliding_window=8,
        ),
        prompts=(PromptSpec("long56", 56), PromptSpec("single", 1)),
    ),
    ModelSpec(
        name="real_vocab",
        seed=8000,
        what="Gemma3nForCausalLM with vocab 262400 / PLE vocab 262144, D=32, 3 layers [S,F,S], window 16; "
        "prompt contains ids >= 262144 (text-only model: embed_tokens rows, PLE row 0)",
        text=dict(
            vocab_size=REAL_VOCAB,
            vocab_size_per_layer_input=REAL_VOCAB_PER_LAYER_INPUT,
            num_hidden_layers=3,
            layer_types=[S, F, S],
            hidden_size=32,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            hidden_size_per_layer_input=8,
            laurel_rank=4,
            intermediate_size=64,
            sliding_window=16,
        ),
        prompts=(PromptSpec("long40", 40, special=((5, 262_144), (6, 262_300), (20, 262_399))),),
    ),
    ModelSpec(
        name="multimodal",
        seed=9000,
        multimodal=True,
        what="Gemma3nForConditionalGeneration (tiny MobileNetV5 + 1-layer audio tower), text D=32, 4 layers "
        "[S,F,S,F], 2 KV-shared, vocab 262400; prompt has vision ids [262144,262272) and audio ids "
        "[262272,262400) embedded by embed_vision / embed_audio",
        text=dict(
            vocab_size=REAL_VOCAB,
            vocab_size_per_layer_input=REAL_VOCAB_PER_LAYER_INPUT,
            num_hidden_layers=4,
            layer_types=[S, F, S, F],
            num_kv_shared_layers=2,
            hidden_size=32,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            hidden_size_per_layer_input=8,
            laurel_rank=4,
            intermediate_size=64,
            sliding_window=16,
        ),
        prompts=(PromptSpec("mm48", 48, special=_mm_prompt_special()),),
    ),
    ModelSpec(
        name="bf16",
        seed=10000,
        bf16=True,
        what="bfloat16 checkpoint: 6 layers [S,S,F,S,S,F], 2 KV-shared, sparsity on layer 0, window 12",
        text=dict(
            num_hidden_layers=6,
            layer_types=[S, S, F, S, S, F],
            num_kv_shared_layers=2,
            activation_sparsity_pattern=[0.95, 0.0, 0.0, 0.0, 0.0, 0.0],
            intermediate_size=160,
            sliding_window=12,
        ),
        prompts=(PromptSpec("long40", 40),),
    ),
    ModelSpec(
        name="window4",
        seed=11000,
        what="window 4 crossed many times: 6 layers [S,F,S,F,S,S], 2 KV-shared (both sliding consumers)",
        text=dict(
            num_hidden_layers=6,
            layer_types=[S, F, S, F, S, S],
            num_kv_shared_layers=2,
            sliding_window=4,
        ),
        prompts=(PromptSpec("long50", 50), PromptSpec("single", 1)),
    ),
)

SPECS_BY_NAME = {s.name: s for s in MODEL_SPECS}


# --------------------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------------------


def text_config_kwargs(spec: ModelSpec) -> dict[str, Any]:
    kw = dict(TEXT_DEFAULTS)
    kw.update(copy.deepcopy(spec.text))
    n = kw["num_hidden_layers"]
    kw.setdefault("layer_types", default_layer_types(n))
    kw.setdefault("activation_sparsity_pattern", [0.0] * n)
    return kw


def _tiny_vision_block_args() -> list:
    """A 4-stage MobileNetV5 with 8 channels everywhere (72.5k parameters instead of the default 294M, which
    takes ~6 s to build and 1.2 GB as float32; the multi-scale fusion adapter's 2048 output channels are fixed
    by timm). Passed to timm through vision_config.model_args["block_args"]; this is
    timm.models._efficientnet_builder.decode_arch_def of
        [["er_r1_k3_s2_e1_c8"], ["uir_r1_a3_k5_s2_e1_c8"],
         ["uir_r1_a0_k0_s1_e1_c8", "mqa_r1_k3_h1_s1_d8_c8", "uir_r1_a0_k0_s1_e1_c8"], ["uir_r1_a3_k5_s2_e1_c8"]]
    written out so that building the config needs no timm. JSON-serialisable, so it survives
    config.json -> from_pretrained."""

    def er(stride):
        return dict(block_type="er", out_chs=8, stride=stride, act_layer=None, exp_kernel_size=3,
                    pw_kernel_size=1, exp_ratio=1.0, force_in_chs=0, se_ratio=0.0, noskip=False)

    def uir(stride, start, mid):
        return dict(block_type="uir", out_chs=8, stride=stride, act_layer=None, dw_kernel_size_start=start,
                    dw_kernel_size_mid=mid, dw_kernel_size_end=0, exp_ratio=1.0, se_ratio=0.0, noskip=False)

    mqa = dict(block_type="mqa", out_chs=8, stride=1, act_layer=None, dw_kernel_size=3, num_heads=1, key_dim=8,
               value_dim=8, kv_stride=1, noskip=False)
    return [[er(2)], [uir(2, 3, 5)], [uir(1, 0, 0), mqa, uir(1, 0, 0)], [uir(2, 3, 5)]]


def make_config(spec: ModelSpec):
    from transformers import Gemma3nTextConfig

    tc = Gemma3nTextConfig(**text_config_kwargs(spec))
    if not spec.multimodal:
        return tc
    from transformers import Gemma3nAudioConfig, Gemma3nConfig, Gemma3nVisionConfig

    # vision/audio hidden sizes deliberately differ from each other and from the text hidden size
    vc = Gemma3nVisionConfig(model_args={"block_args": _tiny_vision_block_args(), "stem_size": 8}, hidden_size=24)
    ac = Gemma3nAudioConfig(
        hidden_size=40,
        input_feat_size=16,
        conf_num_hidden_layers=1,
        conf_num_attention_heads=2,
        sscp_conv_channel_size=[8, 8],
    )
    return Gemma3nConfig(text_config=tc, vision_config=vc, audio_config=ac)


def timm_usable() -> bool:
    """timm (with a working torchvision) can build the real MobileNetV5 tower."""
    if os.environ.get("G3N_TEST_VISION_TOWER", "auto") == "stub":
        return False
    try:
        import timm.data  # noqa: F401  (imports torchvision: fails when torchvision does not match torch)
        from timm.models._efficientnet_builder import decode_arch_def  # noqa: F401

        return True
    except Exception:
        return False


class StubVisionTower(torch.nn.Module):
    """Stand-in for the timm MobileNetV5 tower when timm is not installed (e.g. CI's torch 2.13 CPU wheel has no
    matching torchvision on PyPI). It carries a few tensors named like the real tower's so that the checkpoint
    still has `model.vision_tower.timm_model.*` entries (4-D convs included) that a text-only loader must skip.
    It is never run: the text decoder does not use the vision tower."""

    def __init__(self, config):
        super().__init__()
        nn = torch.nn
        self.config = config
        t = nn.Module()
        t.conv_stem = nn.Module()
        t.conv_stem.conv = nn.Conv2d(3, 8, 3, stride=2, bias=True)
        t.conv_stem.bn = nn.Module()
        t.conv_stem.bn.weight = nn.Parameter(torch.ones(8))
        t.blocks = nn.Module()
        b = nn.Module()
        b.conv_exp = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        b.conv_pwl = nn.Conv2d(8, 8, 1, bias=False)
        setattr(t.blocks, "0", nn.ModuleList([b]))
        t.msfa = nn.Module()
        t.msfa.norm = nn.Module()
        t.msfa.norm.weight = nn.Parameter(torch.ones(2048))
        self.timm_model = t


def instantiate(config):
    from transformers import Gemma3nForCausalLM, Gemma3nForConditionalGeneration

    config._attn_implementation = "eager"
    if getattr(config, "model_type", "") != "gemma3n":
        return Gemma3nForCausalLM(config).eval()

    # timm's builder mutates block_args in place (adds callables): give it a copy, restore the clean one
    clean_args = copy.deepcopy(config.vision_config.model_args)
    if timm_usable():
        model = Gemma3nForConditionalGeneration(config)
        model.vision_tower_kind = "timm"
    else:
        import transformers.models.gemma3n.modeling_gemma3n as mg

        real_auto = mg.AutoModel

        class _Auto:
            @staticmethod
            def from_config(cfg, *a, **k):
                if getattr(cfg, "model_type", "") == "gemma3n_vision":
                    return StubVisionTower(cfg)
                return real_auto.from_config(cfg, *a, **k)

        mg.AutoModel = _Auto
        try:
            model = Gemma3nForConditionalGeneration(config)
        finally:
            mg.AutoModel = real_auto
        model.vision_tower_kind = "stub"
    model.config.vision_config.model_args = clean_args
    return model.eval()


def text_config_of(model):
    cfg = model.config
    return cfg.text_config if getattr(cfg, "model_type", "") == "gemma3n" else cfg


@torch.no_grad()
def randomise_(model, seed: int) -> None:
    """Overwrite every parameter on the text path (see module docstring)."""
    tc = text_config_of(model)
    D = tc.hidden_size
    P = tc.hidden_size_per_layer_input
    g = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return torch.randn(tuple(shape), generator=g, dtype=torch.float32) * std

    seen = set()
    for name, p in model.named_parameters():  # tied lm_head is the same Parameter as embed_tokens: seen once
        if id(p) in seen:
            continue
        seen.add(id(p))
        if "vision_tower" in name or "audio_tower" in name:
            continue
        if name.endswith("embed_tokens.weight"):
            v = normal(p.shape, LOGIT_STD / math.sqrt(D))
        elif name.endswith("embed_tokens_per_layer.weight"):
            v = normal(p.shape, 1.0 / math.sqrt(P))
        elif name.endswith("embed_vision.embedding.weight") or name.endswith("embed_audio.embedding.weight"):
            v = normal(p.shape, 1.0)
        elif p.ndim == 1 and any(k in name for k in POST_NORMS):
            v = POST_NORM_SCALE * (1.0 + normal(p.shape, 0.2))
        elif p.ndim == 1 and (name.endswith("q_norm.weight") or name.endswith("k_norm.weight")):
            v = QK_NORM_SCALE * (1.0 + normal(p.shape, 0.2))
        elif name.endswith("correct_output_scale") or (p.ndim == 1 and "norm" in name):
            v = 1.0 + normal(p.shape, 0.2)
        elif name.endswith("modality_router.weight"):
            v = normal(p.shape, ROUTER_GAIN * math.sqrt(D))
        elif name.endswith("prediction_coefs.weight") or name.endswith("correction_coefs.weight"):
            v = normal(p.shape, ALTUP_COEF_STD)
        elif p.ndim == 2:
            v = normal(p.shape, 1.0 / math.sqrt(p.shape[1]))
        else:
            raise AssertionError(f"randomise_: no rule for parameter {name} {tuple(p.shape)}")
        p.copy_(v)

    # the tie must have survived
    if tc.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


@torch.no_grad()
def round_to_bf16_(model) -> None:
    for name, p in model.named_parameters():
        if "vision_tower" in name or "audio_tower" in name:
            continue
        p.copy_(p.to(torch.bfloat16).to(torch.float32))


# --------------------------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------------------------


def prompt_ids(spec: ModelSpec, prompt: PromptSpec) -> list[int]:
    tc = text_config_kwargs(spec)
    high = prompt.id_high or min(tc["vocab_size"], tc["vocab_size_per_layer_input"])
    rng = np.random.default_rng(spec.seed * 7919 + prompt.length)
    ids = [2] + [int(x) for x in rng.integers(3, high, size=prompt.length - 1)]
    for pos, tok in prompt.special:
        assert pos < prompt.length and tok < tc["vocab_size"]
        ids[pos] = tok
    return ids


# --------------------------------------------------------------------------------------------------------------
# Reference computations (float32, use_cache=True)
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def reference_logits(model, ids: list[int], use_cache: bool = True) -> np.ndarray:
    x = torch.tensor([ids], dtype=torch.long)
    out = model(input_ids=x, use_cache=use_cache)
    return out.logits[0].to(torch.float32).numpy()


@dataclasses.dataclass
class GreedyRef:
    tokens: list[int]  # N_GENERATE new ids
    step_logits: np.ndarray  # [N_GENERATE, vocab] raw logits that chose each token
    margins: np.ndarray  # [N_GENERATE] best - second best

    @property
    def min_margin(self) -> float:
        return float(self.margins.min())


@torch.no_grad()
def reference_greedy(model, ids: list[int], n: int = N_GENERATE) -> GreedyRef:
    from transformers import GenerationConfig

    model.generation_config.eos_token_id = None  # never stop early: always n tokens
    gc = GenerationConfig(
        max_new_tokens=n,
        do_sample=False,
        use_cache=True,
        eos_token_id=None,
        pad_token_id=0,
        bos_token_id=2,
        output_logits=True,
        return_dict_in_generate=True,
    )
    x = torch.tensor([ids], dtype=torch.long)
    out = model.generate(input_ids=x, generation_config=gc)
    new = out.sequences[0, len(ids) :].tolist()
    logits = torch.stack([lg[0] for lg in out.logits]).to(torch.float32).numpy()
    if len(new) != n or logits.shape[0] != n:
        raise AssertionError(f"reference generate made {len(new)} tokens, expected {n}")
    argmax = logits.argmax(axis=-1).tolist()
    if argmax != new:
        raise AssertionError("reference generate applied a logits processor: chosen ids != argmax(raw logits)")
    top2 = np.sort(logits, axis=-1)[:, -2:]
    return GreedyRef(tokens=new, step_logits=logits, margins=top2[:, 1] - top2[:, 0])


def logit_stats(logits: np.ndarray) -> dict[str, float]:
    std = logits.std(axis=-1)
    return dict(
        std_min=float(std.min()),
        std_mean=float(std.mean()),
        std_max=float(std.max()),
        absmax=float(np.abs(logits).max()),
    )


def stats_ok(st: dict[str, float]) -> bool:
    return 1.0 <= st["std_min"] and st["std_max"] <= 10.0 and st["absmax"] < 0.93 * SOFTCAP


# --------------------------------------------------------------------------------------------------------------
# Cases: a saved checkpoint + its reference outputs
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PromptRef:
    prompt: PromptSpec
    ids: list[int]
    logits: np.ndarray  # [T, vocab] float32, model(ids, use_cache=True)
    greedy: GreedyRef
    logits64: np.ndarray  # [T, vocab] the same weights run in float64 (diagnostics only)

    @property
    def cond(self) -> float:
        """max |float32 reference - float64 reference|: the reference's own rounding noise."""
        return float(np.abs(self.logits.astype(np.float64) - self.logits64).max())


@dataclasses.dataclass
class Case:
    spec: ModelSpec
    seed: int  # the seed actually used (spec.seed + k)
    model: Any  # the float32 reference model (bf16-rounded weights for bf16 specs)
    dir: Path  # the checkpoint g3n should load (bfloat16 for bf16 specs)
    dir_f32: Path  # float32 copy (same as dir for non-bf16 specs)
    refs: dict[str, PromptRef]
    n_params: int
    file_bytes: int
    build_s: float
    tries: int
    stats: dict[str, dict[str, float]]

    @property
    def text_config(self):
        return text_config_of(self.model)


def _count_params(model) -> int:
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def build_model(spec: ModelSpec, seed: int):
    model = instantiate(make_config(spec))
    randomise_(model, seed)
    if spec.bf16:
        round_to_bf16_(model)
    return model


def build_case(spec: ModelSpec, root: Path) -> Case:
    """Build, randomise, pick a seed with comfortable greedy margins, save, compute references."""
    t0 = time.perf_counter()
    best = None
    for k in range(MAX_SEED_TRIES):
        seed = spec.seed + k
        model = build_model(spec, seed)
        model64 = copy.deepcopy(model).to(torch.float64)
        refs: dict[str, PromptRef] = {}
        stats: dict[str, dict[str, float]] = {}
        for pr in spec.prompts:
            ids = prompt_ids(spec, pr)
            lg = reference_logits(model, ids)
            with torch.no_grad():
                lg64 = model64(input_ids=torch.tensor([ids]), use_cache=True).logits[0].numpy()
            gr = reference_greedy(model, ids)
            refs[pr.name] = PromptRef(pr, ids, lg, gr, lg64)
            stats[pr.name] = logit_stats(lg)
        del model64
        min_margin = min(r.greedy.min_margin for r in refs.values())
        ok = (
            min_margin >= MIN_GREEDY_MARGIN
            and all(stats_ok(s) for s in stats.values())
            and all(r.cond <= COND_TOL for r in refs.values())
        )
        if best is None or (ok and not best[0]) or (ok == best[0] and min_margin > best[1]):
            best = (ok, min_margin, seed, model, refs, stats, k + 1)
        if ok:
            break
    _, _, seed, model, refs, stats, tries = best

    d32 = root / spec.name / ("f32" if spec.bf16 else "model")
    model.save_pretrained(d32, safe_serialization=True)
    d = d32
    if spec.bf16:
        d = root / spec.name / "bf16"
        m16 = copy.deepcopy(model).to(torch.bfloat16)
        m16.config.dtype = torch.bfloat16  # noqa: config records the checkpoint dtype
        m16.save_pretrained(d, safe_serialization=True)
        del m16
    return Case(
        spec=spec,
        seed=seed,
        model=model,
        dir=d,
        dir_f32=d32,
        refs=refs,
        n_params=_count_params(model),
        file_bytes=(d / "model.safetensors").stat().st_size,
        build_s=time.perf_counter() - t0,
        tries=tries,
        stats=stats,
    )


def describe(case: Case) -> str:
    tc = case.text_config
    return (
        f"{case.spec.name}: seed {case.seed} (try {case.tries}), {case.n_params / 1e6:.2f}M params, "
        f"{case.file_bytes / 1e6:.1f} MB, L={tc.num_hidden_layers} D={tc.hidden_size} "
        f"kv_shared={tc.num_kv_shared_layers} window={tc.sliding_window}"
        + (f" vision_tower={case.model.vision_tower_kind}" if hasattr(case.model, "vision_tower_kind") else "")
        + f", built in {case.build_s:.1f}s; "
        + "; ".join(
            f"{n}: T={len(r.ids)} min greedy margin {r.greedy.min_margin:.3g}, f32-vs-f64 {r.cond:.1e}, logit std "
            f"{case.stats[n]['std_mean']:.2f} absmax {case.stats[n]['absmax']:.1f}"
            for n, r in case.refs.items()
        )
    )


# --------------------------------------------------------------------------------------------------------------
# Helpers for checkpoint surgery (load-error tests, extra-tensor tests)
# --------------------------------------------------------------------------------------------------------------


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def read_config(d: Path) -> dict:
    return json.loads((d / "config.json").read_text())


def write_config(d: Path, cfg: dict) -> None:
    (d / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
