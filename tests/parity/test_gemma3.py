"""Gemma 3 (the family's plain architecture) from the same decoder: random small Gemma3ForCausalLM models
against transformers, position by position, and greedy decoding.

Covers what differs from Gemma 3n: (1 + w) norms, query pre-attention scaling (query_pre_attn_scalar), no
v_norm, the 6-layer sliding pattern, linear RoPE scaling on the global layers, optional final soft-cap.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from g3n_harness import check_ok

CASES = {
    # name: (config overrides, prompt length)
    "plain": (dict(), 40),
    "linear_rope_softcap": (dict(rope_scaling={"rope_type": "linear", "factor": 8.0}, final_logit_softcapping=30.0,
                                 query_pre_attn_scalar=24), 50),
    "gqa_one_kv_head": (dict(num_key_value_heads=1, num_attention_heads=4, sliding_window=5), 30),
}


def build(tmp: "Path", overrides: dict, seed: int):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    kw = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=7, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, sliding_window=8, max_position_embeddings=256)
    kw.update(overrides)
    model = Gemma3ForCausalLM(Gemma3TextConfig(**kw)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.3 * torch.randn_like(p))  # the model computes x * (1 + w)
            else:
                p.copy_(torch.randn_like(p) / np.sqrt(p.shape[-1]))
    model.save_pretrained(tmp)
    return model


@pytest.mark.parametrize("name", list(CASES))
def test_gemma3_matches_transformers(g3n, tmp_path, name):
    overrides, n = CASES[name]
    model = build(tmp_path / "m", overrides, seed=7)
    rng = np.random.default_rng(3)
    ids = [2] + rng.integers(3, 512, n - 1).tolist()
    with torch.no_grad():
        ref = model(torch.tensor([ids]), use_cache=True).logits[0].float().numpy()
    out = tmp_path / "logits.npy"
    check_ok(g3n.score(tmp_path / "m", ids, out), "g3n score")
    got = np.load(out)
    assert got.shape == ref.shape
    err = float(np.abs(got - ref).max())
    print(f"gemma3/{name}: max |Δ| = {err:.2e}")
    assert err <= 1e-3, err

    with torch.no_grad():
        gen = model.generate(torch.tensor([ids[:12]]), max_new_tokens=24, do_sample=False, use_cache=True,
                             eos_token_id=None, pad_token_id=0)
    ref_ids = gen[0, 12:].tolist()
    p = g3n.generate(tmp_path / "m", ids[:12], 24)
    check_ok(p, "g3n generate")
    assert [int(x) for x in p.stdout.split()] == ref_ids
