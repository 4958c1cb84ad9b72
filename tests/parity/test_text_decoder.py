"""Parity of g3n's text decoder with Hugging Face transformers' Gemma 3n (float32 reference, use_cache=True).

For every (model, prompt) case:
  * `g3n score` logits vs the reference logits, position by position: max |delta| <= SCORE_TOL;
  * `g3n generate -n 32` vs `model.generate(..., max_new_tokens=32, do_sample=False, use_cache=True)`.

The models are defined in gemma3n_models.MODEL_SPECS (see there for what each one exercises). Tests marked
`reference` check the reference side itself (no binary needed; run them alone with G3N_REFERENCE_ONLY=1).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import gemma3n_models as gm
from g3n_harness import check_ok, describe_run

SCORE_TOL = 1e-3

CASES = [(s.name, p.name) for s in gm.MODEL_SPECS for p in s.prompts]
CASE_IDS = [f"{m}-{p}" for m, p in CASES]


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def _load_logits(path, expect_shape, what: str) -> np.ndarray:
    if not path.exists():
        pytest.fail(f"{what}: g3n exited 0 but wrote no {path}")
    arr = np.load(path, allow_pickle=False)
    assert arr.dtype == np.float32, f"{what}: logits dtype {arr.dtype}, expected float32"
    assert arr.shape == expect_shape, f"{what}: logits shape {arr.shape}, expected {expect_shape} [tokens, vocab]"
    return arr


def compare_logits(case: gm.Case, pr: gm.PromptRef, got: np.ndarray) -> tuple[float, str]:
    """Returns (max |delta| against the float32 reference, human-readable diagnosis)."""
    ref = pr.logits
    tc = case.text_config
    W = tc.sliding_window
    d = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    d = np.where(np.isnan(d), np.inf, d)
    per_pos = d.max(axis=-1)
    worst = float(per_pos.max())
    wpos = int(per_pos.argmax())
    bad = np.nonzero(per_pos > SCORE_TOL)[0]
    first_bad = int(bad[0]) if len(bad) else None
    inside = float(per_pos[:W].max())
    beyond = float(per_pos[W:].max()) if len(per_pos) > W else float("nan")
    agree = int((got.argmax(-1) == ref.argmax(-1)).sum())
    wtok = int(d[wpos].argmax())
    lines = [
        f"max |delta| {worst:.3g} at position {wpos} (token id {wtok}: ref {ref[wpos, wtok]:.6f}, "
        f"g3n {got[wpos, wtok]:.6f})",
        f"first position with |delta| > {SCORE_TOL:g}: {first_bad}; {len(bad)} of {len(per_pos)} positions over",
        f"max |delta| at positions < sliding_window ({W}): {inside:.3g}; at positions >= {W}: {beyond:.3g}",
        f"argmax agrees at {agree}/{len(per_pos)} positions",
        f"for scale: max |g3n - float64 reference| {float(np.nan_to_num(np.abs(got - pr.logits64), nan=np.inf).max()):.3g}; "
        f"max |float32 reference - float64 reference| {pr.cond:.3g}",
        "per-position max |delta|: " + " ".join(f"{x:.1e}" for x in per_pos),
        f"config: layers {tc.num_hidden_layers}, layer_types {tc.layer_types}, num_kv_shared_layers "
        f"{tc.num_kv_shared_layers}, sparsity {tc.activation_sparsity_pattern}, intermediate {tc.intermediate_size}",
    ]
    if not np.isfinite(got).all():
        lines.insert(0, f"g3n logits contain {int((~np.isfinite(got)).sum())} non-finite values")
    return worst, "\n".join(lines)


def parse_generated(p, n: int, what: str) -> list[int]:
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    if len(lines) != 1:
        pytest.fail(f"{what}: expected exactly one line of token ids on stdout, got {len(lines)}\n{describe_run(p)}")
    try:
        toks = [int(t) for t in lines[0].split()]
    except ValueError:
        pytest.fail(f"{what}: stdout is not space-separated integers\n{describe_run(p)}")
    if len(toks) != n:
        pytest.fail(f"{what}: expected {n} token ids, got {len(toks)}: {toks}\n{describe_run(p)}")
    return toks


# --------------------------------------------------------------------------------------------------------------
# parity tests (need the binary)
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name,prompt_name", CASES, ids=CASE_IDS)
def test_score_matches_reference(g3n, cases, record, tmp_path, model_name, prompt_name):
    case = cases.get(model_name)
    pr = case.refs[prompt_name]
    what = f"score {model_name}/{prompt_name} ({case.spec.what})"
    out = tmp_path / "logits.npy"
    p = g3n.score(case.dir, pr.ids, out)
    check_ok(p, what)
    got = _load_logits(out, pr.logits.shape, what)
    worst, diag = compare_logits(case, pr, got)
    ok = worst <= SCORE_TOL
    record(f"{model_name}/{prompt_name}", "score max|delta|", f"{worst:.2e} (T={len(pr.ids)})", ok)
    assert ok, f"{what}: logits differ from the reference\n{diag}"


@pytest.mark.parametrize("model_name,prompt_name", CASES, ids=CASE_IDS)
def test_generate_matches_reference(g3n, cases, record, model_name, prompt_name):
    case = cases.get(model_name)
    pr = case.refs[prompt_name]
    ref = pr.greedy
    n = gm.N_GENERATE
    what = f"generate {model_name}/{prompt_name} ({case.spec.what})"
    p = g3n.generate(case.dir, pr.ids, n)
    check_ok(p, what)
    got = parse_generated(p, n, what)
    same = got == ref.tokens
    first = next((i for i, (a, b) in enumerate(zip(got, ref.tokens)) if a != b), None)
    record(
        f"{model_name}/{prompt_name}",
        f"generate {n} greedy",
        "equal" if same else f"differs at step {first}",
        same,
        f"(ref min margin {ref.min_margin:.3g})",
    )
    if not same:
        lg = ref.step_logits[first]
        r, g = ref.tokens[first], got[first]
        g_logit = f"{lg[g]:.6f}" if 0 <= g < lg.shape[0] else "out of vocabulary"
        pytest.fail(
            f"{what}: greedy tokens differ first at step {first} (prompt length {len(pr.ids)}, position "
            f"{len(pr.ids) + first - 1} produces it)\n"
            f"reference picked {r} (ref logit {lg[r]:.6f}); g3n picked {g} (ref logit {g_logit}); "
            f"reference margin at that step {ref.margins[first]:.3g}\n"
            f"reference: {ref.tokens}\ng3n:       {got}"
        )


def test_score_tolerates_unused_kv_tensors_of_shared_layers(g3n, cases, record, tmp_path):
    """Real Gemma 3n checkpoints (converted before transformers dropped them) carry k_proj / v_proj / k_norm for
    the KV-shared layers too. They are unused: adding them must not change the logits."""
    case = cases.get("kvshare")
    pr = case.refs["long48"]
    tc = case.text_config
    d = tmp_path / "kvshare_with_unused_kv"
    d.mkdir()
    (d / "config.json").write_bytes((case.dir / "config.json").read_bytes())
    tensors = gm.load_tensors(case.dir / "model.safetensors")
    g = torch.Generator().manual_seed(7)
    kv_dim = tc.num_key_value_heads * tc.head_dim
    first_shared = tc.num_hidden_layers - tc.num_kv_shared_layers
    for i in range(first_shared, tc.num_hidden_layers):
        pre = f"model.layers.{i}.self_attn."
        assert pre + "k_proj.weight" not in tensors
        tensors[pre + "k_proj.weight"] = torch.randn(kv_dim, tc.hidden_size, generator=g)
        tensors[pre + "v_proj.weight"] = torch.randn(kv_dim, tc.hidden_size, generator=g)
        tensors[pre + "k_norm.weight"] = torch.randn(tc.head_dim, generator=g)
    gm.save_tensors(tensors, d / "model.safetensors")
    out = tmp_path / "logits.npy"
    p = g3n.score(d, pr.ids, out)
    check_ok(p, "score kvshare + unused k/v tensors")
    got = _load_logits(out, pr.logits.shape, "kvshare + unused k/v tensors")
    worst, diag = compare_logits(case, pr, got)
    record("kvshare/long48", "score +unused kv", f"{worst:.2e}", worst <= SCORE_TOL)
    assert worst <= SCORE_TOL, f"extra (unused) k/v tensors of KV-shared layers changed the logits\n{diag}"


def test_score_sharded_checkpoint(g3n, cases, record, tmp_path):
    """Real checkpoints are sharded (model-0000N-of-0000M.safetensors + model.safetensors.index.json)."""
    case = cases.get("kvshare")
    pr = case.refs["long48"]
    d = tmp_path / "kvshare_sharded"
    case.model.save_pretrained(d, safe_serialization=True, max_shard_size="300KB")
    shards = sorted(p.name for p in d.glob("model-*.safetensors"))
    assert len(shards) > 2 and (d / "model.safetensors.index.json").exists(), shards
    out = tmp_path / "logits.npy"
    p = g3n.score(d, pr.ids, out)
    check_ok(p, f"score kvshare sharded into {len(shards)} files")
    got = _load_logits(out, pr.logits.shape, "kvshare sharded")
    worst, diag = compare_logits(case, pr, got)
    record("kvshare/long48", f"score {len(shards)} shards", f"{worst:.2e}", worst <= SCORE_TOL)
    assert worst <= SCORE_TOL, diag


def test_score_single_thread(g3n, cases, record, tmp_path):
    """Same check with --threads 1 (the main tests use G3N_TEST_THREADS, default 2)."""
    case = cases.get("e2b_like")
    pr = case.refs["long56"]
    out = tmp_path / "logits.npy"
    p = g3n.score(case.dir, pr.ids, out, threads=1)
    check_ok(p, "score e2b_like --threads 1")
    got = _load_logits(out, pr.logits.shape, "e2b_like --threads 1")
    worst, diag = compare_logits(case, pr, got)
    record("e2b_like/long56", "score --threads 1", f"{worst:.2e}", worst <= SCORE_TOL)
    assert worst <= SCORE_TOL, diag


# --------------------------------------------------------------------------------------------------------------
# reference self-checks (no binary)
# --------------------------------------------------------------------------------------------------------------

MODEL_NAMES = [s.name for s in gm.MODEL_SPECS]


@pytest.mark.reference
@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_reference_is_well_conditioned(cases, record, model_name):
    """Logits have a useful spread (std over the vocab in [1, 10]), are not saturated by the 30 soft-cap,
    every greedy step has a comfortable top-1 margin, and the float32 reference is within COND_TOL of float64."""
    case = cases.get(model_name)
    for name, st in case.stats.items():
        margin = case.refs[name].greedy.min_margin
        cond = case.refs[name].cond
        record(
            f"{model_name}/{name}",
            "ref spread/margin/f64",
            f"std {st['std_min']:.2f}..{st['std_max']:.2f} max {st['absmax']:.1f}",
            gm.stats_ok(st) and margin >= gm.MIN_GREEDY_MARGIN and cond <= gm.COND_TOL,
            f"min margin {margin:.3g}, f32-vs-f64 {cond:.1e}",
        )
        assert gm.stats_ok(st), f"{model_name}/{name}: logit statistics out of range: {st}"
        assert margin >= gm.MIN_GREEDY_MARGIN, f"{model_name}/{name}: greedy margin {margin} too small"
        assert cond <= gm.COND_TOL, f"{model_name}/{name}: float32 reference is {cond} from float64"


@pytest.mark.reference
def test_reference_every_parameter_randomised(cases):
    """No text-path parameter is left at Hugging Face's constant init (0 or 1)."""
    for name in ("e2b_like", "multimodal"):
        model = cases.get(name).model
        for pname, p in model.named_parameters():
            if "vision_tower" in pname or "audio_tower" in pname:
                continue
            assert p.numel() == 1 or float(p.detach().std()) > 1e-3, f"{name}: {pname} looks constant"


@pytest.mark.reference
@pytest.mark.parametrize("model_name,prompt_name", [("kvshare", "long48"), ("window4", "long50")])
def test_reference_cache_flag(cases, record, model_name, prompt_name):
    """Documents how the reference behaves with and without a cache for KV-shared models. In transformers
    5.24 the shared K/V travel in a per-forward dict, so both agree; the suite always uses use_cache=True."""
    case = cases.get(model_name)
    pr = case.refs[prompt_name]
    no_cache = gm.reference_logits(case.model, pr.ids, use_cache=False)
    delta = float(np.abs(no_cache - pr.logits).max())
    record(f"{model_name}/{prompt_name}", "ref cache vs no-cache", f"{delta:.2e}", True)
    assert delta < 1e-4


@pytest.mark.reference
@pytest.mark.parametrize("model_name,prompt_name", [("kvshare", "long48"), ("window4", "long50"), ("multimodal", "mm48")])
def test_reference_kv_sharing_is_exercised(cases, record, model_name, prompt_name):
    """The same weights with num_kv_shared_layers=0 (consumer layers get their own random K/V) give different
    logits: the shared-K/V path matters for these models."""
    case = cases.get(model_name)
    pr = case.refs[prompt_name]
    cfg = copy.deepcopy(case.model.config)
    tc = cfg.text_config if cfg.model_type == "gemma3n" else cfg
    tc.num_kv_shared_layers = 0
    unshared = gm.instantiate(cfg)
    missing, unexpected = unshared.load_state_dict(case.model.state_dict(), strict=False)
    assert not unexpected and all(".self_attn.k_" in k or ".self_attn.v_" in k for k in missing), missing
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for k in missing:
            t = unshared.get_parameter(k)
            r = torch.randn(t.shape, generator=g)
            t.copy_(r / t.shape[1] ** 0.5 if t.ndim == 2 else 1.0 + 0.2 * r)
    lg = gm.reference_logits(unshared, pr.ids)
    delta = float(np.abs(lg - pr.logits).max())
    record(f"{model_name}/{prompt_name}", "ref kv-sharing matters", f"{delta:.2e}", delta > 0.05)
    assert delta > 0.05


@pytest.mark.reference
@pytest.mark.parametrize("model_name,prompt_name", [("base", "long48"), ("window4", "long50")])
def test_reference_sliding_window_is_exercised(cases, record, model_name, prompt_name):
    """With the window widened to cover the prompt, positions < window are unchanged and later ones change."""
    case = cases.get(model_name)
    pr = case.refs[prompt_name]
    W = case.text_config.sliding_window
    cfg = copy.deepcopy(case.model.config)
    cfg.sliding_window = 4096
    wide = gm.instantiate(cfg)
    wide.load_state_dict(case.model.state_dict())
    lg = gm.reference_logits(wide, pr.ids)
    per_pos = np.abs(lg - pr.logits).max(-1)
    record(
        f"{model_name}/{prompt_name}",
        "ref window matters",
        f"<W {per_pos[:W].max():.1e} >=W {per_pos[W:].max():.1e}",
        True,
    )
    assert per_pos[:W].max() < 1e-4 and per_pos[W:].min() > 1e-3, per_pos


@pytest.mark.reference
def test_reference_sparsity_is_exercised(cases, record):
    case = cases.get("sparsity")
    pr = case.refs["long40"]
    cfg = copy.deepcopy(case.model.config)
    cfg.activation_sparsity_pattern = [0.0] * cfg.num_hidden_layers
    dense = gm.instantiate(cfg)
    dense.load_state_dict(case.model.state_dict())
    # fraction of gate activations that survive the gaussian top-k in layer 0
    mlp = case.model.model.layers[0].mlp
    x = torch.randn(64, mlp.hidden_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        kept = float((mlp._gaussian_topk(mlp.gate_proj(x)) > 0).float().mean())
    delta = float(np.abs(gm.reference_logits(dense, pr.ids) - pr.logits).max())
    record("sparsity/long40", "ref sparsity matters", f"{delta:.2e}", delta > 0.05, f"kept {kept:.3f} of gate")
    assert delta > 0.05 and 0.01 < kept < 0.12


@pytest.mark.reference
def test_reference_multimodal_ids_use_embedders(cases, record):
    """Gemma3nForCausalLM with the same language-model weights agrees with the multimodal model up to the first
    vision/audio id and differs from there on: ids >= 262144 really go through embed_vision / embed_audio."""
    from transformers import Gemma3nForCausalLM

    case = cases.get("multimodal")
    pr = case.refs["mm48"]
    tc = copy.deepcopy(case.text_config)
    tc._attn_implementation = "eager"
    text_only = Gemma3nForCausalLM(tc).eval()
    sd = {k.replace("model.language_model.", "model."): v for k, v in case.model.state_dict().items()
          if k.startswith("model.language_model.")}
    missing, unexpected = text_only.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    lg = gm.reference_logits(text_only, pr.ids)
    first_mm = next(i for i, t in enumerate(pr.ids) if t >= gm.VISION_OFFSET)
    per_pos = np.abs(lg - pr.logits).max(-1)
    record("multimodal/mm48", "ref embedders matter", f"pre {per_pos[:first_mm].max():.1e} "
           f"post {per_pos[first_mm:].max():.1e}", True)
    assert per_pos[:first_mm].max() < 1e-5 and per_pos[first_mm] > 1e-2


@pytest.mark.reference
def test_reference_bf16_checkpoint_is_the_reference_weights(cases):
    """The bf16 file holds bfloat16 tensors whose float32 upcast is exactly the reference model's weights."""
    case = cases.get("bf16")
    tensors = gm.load_tensors(case.dir / "model.safetensors")
    assert all(t.dtype == torch.bfloat16 for t in tensors.values()), {t.dtype for t in tensors.values()}
    cfg = gm.read_config(case.dir)
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "bfloat16", cfg.get("dtype")
    sd = case.model.state_dict()
    for k, t in tensors.items():
        assert torch.equal(t.float(), sd[k]), k
