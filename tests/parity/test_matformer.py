"""MatFormer: a runtime profile of one loaded E4B-like model equals the checkpoint sliced from it.

The E4B-like model has the real layer structure (35 layers, the last 15 KV-shared, 0.95 sparsity in the
first 10, every 5th layer global) at a reduced width. The reference slices it with an independent
implementation of the MatFormer Lab procedure written here (kept layers renamed in order, FFN prefixes,
PLE column / row blocks, config lists filtered by the kept layers) and runs transformers on the result;
g3n runs the *unsliced* checkpoint with --profile. Also: `g3n slice` output loads in transformers and
matches, a chat that switches profiles turn by turn equals fresh single-profile runs (elastic), and on Q8_0
weights the profile (reading prefix blocks of gate/up rows and of down's columns in place) equals the
quantised sliced checkpoint exactly.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import gemma3n_models as gm
from g3n_harness import check_ok

L, FULL, HALF = 35, 128, 64
# The real vocabulary size (so the synthetic Gemma tokenizer fits for the chat test); a small PLE table
# (ids past it read PLE row 0, as the reference does).
E4B_KW = dict(vocab_size=262400, vocab_size_per_layer_input=512, hidden_size=32, intermediate_size=FULL,
              num_hidden_layers=L, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
              hidden_size_per_layer_input=8, laurel_rank=4, sliding_window=16, num_kv_shared_layers=15,
              max_position_embeddings=512)


def ranges(text: str) -> list[int]:
    out = []
    for part in text.split():
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def published() -> dict[str, tuple[list[int], list[int]]]:
    """name -> (skipped, layers keeping the full width), read from the repository's data table."""
    rows = {}
    lines = [l for l in (Path(__file__).parents[2] / "data" / "gemma3n_slicing_configs.csv").read_text().splitlines()
             if l and not l.startswith("#")]
    for line in lines[1:]:
        name, skipped, full = line.split(",")
        rows[name] = (ranges(skipped), ranges(full))
    return rows


def lab_slice(model, skipped: list[int], ffn: list[int]):
    """The MatFormer Lab's slicing, reimplemented: returns a new Gemma3nForCausalLM."""
    from transformers import Gemma3nForCausalLM, Gemma3nTextConfig

    cfg = model.config.to_dict()
    kept = [i for i in range(cfg["num_hidden_layers"]) if i not in skipped]
    assert len(ffn) == len(kept)
    first_shared = cfg["num_hidden_layers"] - cfg["num_kv_shared_layers"]
    new = dict(cfg)
    new["num_hidden_layers"] = len(kept)
    new["intermediate_size"] = list(ffn)
    new["num_kv_shared_layers"] = cfg["num_kv_shared_layers"] - sum(1 for s in skipped if s >= first_shared)
    new["layer_types"] = [cfg["layer_types"][i] for i in kept]
    new["activation_sparsity_pattern"] = [cfg["activation_sparsity_pattern"][i] for i in kept]
    for k in ("architectures", "transformers_version", "dtype", "torch_dtype", "_name_or_path", "model_type"):
        new.pop(k, None)
    sliced = Gemma3nForCausalLM(Gemma3nTextConfig(**new)).eval()
    P = cfg["hidden_size_per_layer_input"]
    src = model.state_dict()
    out = {}
    for name, t in src.items():
        if name.startswith("model.layers."):
            i = int(name.split(".")[2])
            if i not in kept:
                continue
            n = kept.index(i)
            rest = name.split(".", 3)[3]
            f = ffn[n]
            if rest in ("mlp.gate_proj.weight", "mlp.up_proj.weight"):
                t = t[:f, :]
            elif rest == "mlp.down_proj.weight":
                t = t[:, :f]
            out[f"model.layers.{n}.{rest}"] = t
        elif name == "model.embed_tokens_per_layer.weight":
            out[name] = t.view(t.shape[0], -1, P)[:, kept, :].reshape(t.shape[0], -1)
        elif name == "model.per_layer_model_projection.weight":
            out[name] = t.view(-1, P, t.shape[1])[kept].reshape(-1, t.shape[1])
        else:
            out[name] = t
    missing, unexpected = sliced.load_state_dict(out, strict=False)
    assert not [m for m in missing if not m.startswith("lm_head")], missing
    assert not unexpected, unexpected
    return sliced


@pytest.fixture(scope="module")
def e4b(tmp_path_factory):
    from transformers import Gemma3nForCausalLM, Gemma3nTextConfig

    torch.manual_seed(0)
    cfg = Gemma3nTextConfig(**E4B_KW)
    cfg._attn_implementation = "eager"
    model = Gemma3nForCausalLM(cfg).eval()
    with torch.no_grad():
        gm.randomise_(model, 12)
        # 35 random layers amplify rounding: smaller residual branches keep the model well conditioned
        # (float32 within 2e-4 of float64), so the comparison measures the engine, not the noise.
        for name, p in model.named_parameters():
            if any(k in name for k in gm.POST_NORMS):
                p.mul_(0.25)
    d = tmp_path_factory.mktemp("e4b") / "model"
    model.save_pretrained(d)
    return model, d


@pytest.fixture(scope="module")
def e4b_with_tokenizer(g3n, e4b, tmp_path_factory):
    model, d = e4b
    tiny = tmp_path_factory.mktemp("tok") / "tiny"
    check_ok(g3n.run("make-random", "--preset", "tiny", "--modalities", "text", "--out", tiny), "make-random")
    (d / "tokenizer.model").write_bytes((tiny / "tokenizer.model").read_bytes())
    return d


def profile_lists(name: str):
    skipped, full = published()[name]
    kept = [i for i in range(L) if i not in skipped]
    return skipped, [FULL if i in full else HALF for i in kept]


PROFILES = ["Config for official E2B Model", "Config for E1.96B (layer-level)", "Config for E2.54B (layer-level)",
            "Config for E2.98B (block-level)", "Config for E3.18B (layer-level)", "skip=12;ffn=96"]


def lists_for(spec: str):
    if spec.startswith("skip="):
        skipped = ranges(spec.split(";")[0][5:])
        return skipped, [96] * (L - len(skipped))
    return profile_lists(spec)


@pytest.mark.parametrize("spec", PROFILES)
def test_runtime_profile_equals_sliced_checkpoint(g3n, e4b, tmp_path, spec):
    model, d = e4b
    skipped, ffn = lists_for(spec)
    sliced = lab_slice(model, skipped, ffn).double()  # the reference in float64
    rng = np.random.default_rng(1)
    ids = [2] + rng.integers(3, 512, 39).tolist()
    with torch.no_grad():
        ref = sliced(torch.tensor([ids]), use_cache=True).logits[0].numpy()
    out = tmp_path / "l.npy"
    check_ok(g3n.run("score", "-m", d, "--ids", ",".join(map(str, ids)), "--out", out, "--profile", spec), "score")
    err = float(np.abs(np.load(out) - ref).max())
    print(f"matformer {spec}: max |Δ| = {err:.2e}")
    assert err <= 1e-3

    with torch.no_grad():
        gen = sliced.generate(torch.tensor([ids[:10]]), max_new_tokens=16, do_sample=False, use_cache=True,
                              eos_token_id=None, pad_token_id=0)
    p = g3n.run("generate", "-m", d, "--ids", ",".join(map(str, ids[:10])), "-n", "16", "--profile", spec)
    check_ok(p, "generate")
    assert [int(x) for x in p.stdout.split()] == gen[0, 10:].tolist()


def test_slice_export_loads_in_transformers(g3n, e4b, tmp_path):
    from transformers import Gemma3nForCausalLM

    model, d = e4b
    spec = "Config for E1.96B (layer-level)"
    out = tmp_path / "sliced"
    check_ok(g3n.run("slice", "-m", d, "--profile", spec, "--out", out), "slice")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 30 and cfg["num_kv_shared_layers"] == 10
    exported = Gemma3nForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ref = lab_slice(model, *lists_for(spec))
    exported, ref = exported.double(), ref.double()
    ids = torch.tensor([[2] + list(range(40, 70))])
    with torch.no_grad():
        a = exported(ids, use_cache=True).logits[0].numpy()
        b = ref(ids, use_cache=True).logits[0].numpy()
    assert float(np.abs(a - b).max()) <= 1e-5
    s = tmp_path / "s.npy"
    check_ok(g3n.run("score", "-m", out, "--ids", ",".join(map(str, ids[0].tolist())), "--out", s), "score sliced")
    assert float(np.abs(np.load(s) - b).max()) <= 1e-3


def test_elastic_switching_in_one_process(g3n, e4b_with_tokenizer, tmp_path):
    """One `g3n chat` process answers turn 1 as E4B, then E2B, a custom profile, E2.49B and E2B again: each
    answer equals a fresh run of that profile over the same conversation. The cache is kept exactly when the
    switch leaves the layers below the first KV-shared layer (20) unchanged: E2.49B -> E2B changes only
    layers 20-24, the other switches change widths or skips below 20."""
    d = e4b_with_tokenizer
    common = ["-m", str(d), "-n", "8", "--temperature", "0"]
    turns = [("E4B", "first question"), ("E2B", "second question"), ("skip=12;ffn=96", "third question"),
             ("Config for E2.49B (block-level)", "fourth question"), ("E2B", "fifth question")]
    script = "".join(f"/profile {prof}\n{q}\n" for prof, q in turns)
    chat = subprocess.run([str(g3n.path), "chat", *common, "-v"], input=script, capture_output=True, text=True,
                          timeout=600)
    assert chat.returncode == 0, chat.stderr
    notes = [l for l in chat.stderr.splitlines() if l.startswith("(profile")]
    assert [("kept" in n) for n in notes] == [True, False, False, False, True], notes

    history, expected = [], ""
    for prof, q in turns:
        history.append({"role": "user", "content": q})
        conv = tmp_path / "conv.json"
        conv.write_text(json.dumps(history))
        fresh = g3n.run("run", *common, "--profile", prof, "--messages", conv)
        check_ok(fresh, "run")
        expected += fresh.stdout
        history.append({"role": "assistant", "content": fresh.stdout[:-1]})
    assert chat.stdout == expected


@pytest.fixture(scope="module")
def e4b_q8(g3n, e4b_with_tokenizer, tmp_path_factory):
    q = tmp_path_factory.mktemp("q8") / "e4b.gguf"
    check_ok(g3n.run("quantize", "-m", e4b_with_tokenizer, "--type", "q8", "--out", q), "quantize")
    yield q
    q.unlink(missing_ok=True)


@pytest.mark.parametrize("spec", ["Config for official E2B Model", "skip=12;ffn=96"])
def test_quantised_profile_equals_quantised_slice(g3n, e4b_with_tokenizer, e4b_q8, tmp_path, spec):
    """Q8_0 blocks run along rows, so for widths on block boundaries slicing and quantising commute (gate/up
    keep whole rows, down keeps whole blocks of each row; the PLE table, 280 wide, stays F32): the runtime
    profile on the quantised E4B must compute exactly what the quantised sliced checkpoint computes, with
    down_proj read as a strided prefix (prefill), through the transposed copy (decode of sparse layers)
    and as a dense prefix (decode of the other layers)."""
    sliced = tmp_path / "sliced"
    check_ok(g3n.run("slice", "-m", e4b_with_tokenizer, "--profile", spec, "--out", sliced), "slice")
    sliced_q8 = tmp_path / "sliced.gguf"
    check_ok(g3n.run("quantize", "-m", sliced, "--type", "q8", "--out", sliced_q8), "quantize sliced")
    rng = np.random.default_rng(2)
    ids = ",".join(map(str, [2] + rng.integers(3, 512, 39).tolist()))
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    check_ok(g3n.run("score", "-m", e4b_q8, "--ids", ids, "--out", a, "--profile", spec), "score profile")
    check_ok(g3n.run("score", "-m", sliced_q8, "--ids", ids, "--out", b), "score sliced")
    err = float(np.abs(np.load(a) - np.load(b)).max())
    print(f"q8 matformer {spec}: max |Δ| = {err:.2e}")
    assert err <= 1e-5
    head = ",".join(ids.split(",")[:10])
    p = g3n.run("generate", "-m", e4b_q8, "--ids", head, "-n", "16", "--profile", spec)
    r = g3n.run("generate", "-m", sliced_q8, "--ids", head, "-n", "16")
    check_ok(p, "generate profile")
    check_ok(r, "generate sliced")
    assert p.stdout.split() == r.stdout.split()


def test_quantised_profile_off_block_boundary_is_refused(g3n, e4b_q8, tmp_path):
    p = g3n.run("score", "-m", e4b_q8, "--ids", "2,10,11", "--out", tmp_path / "x.npy", "--profile", "skip=12;ffn=80")
    assert p.returncode != 0
    assert "multiple of 32" in p.stderr, p.stderr
