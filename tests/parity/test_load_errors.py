"""g3n must refuse broken checkpoints cleanly: non-zero exit (not a signal), and a stderr message that names the
problem (tensor name; expected and found shapes formatted like `[64, 32]`; the offending config field)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

import gemma3n_models as gm
from g3n_harness import describe_run

pytestmark = pytest.mark.badinput  # also run under ASan/UBSan (scripts/test --asan)

# A valid tiny text-only checkpoint: D=32, 4 heads of 16 (q_proj [64, 32], k/v_proj [32, 32]), 4 layers.
VALID = gm.ModelSpec(
    name="load_errors_valid",
    seed=4242,
    what="tiny valid checkpoint for the load-error tests",
    text=dict(
        num_hidden_layers=4,
        layer_types=[gm.S, gm.F, gm.S, gm.F],
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        hidden_size_per_layer_input=8,
        laurel_rank=4,
        intermediate_size=96,
        vocab_size=256,
        vocab_size_per_layer_input=256,
        sliding_window=8,
    ),
    prompts=(),
)
IDS = [2, 17, 5, 200, 33, 101, 7, 9]


@pytest.fixture(scope="session")
def valid_dir(tmp_path_factory, _torch_threads):
    d = tmp_path_factory.mktemp("load_errors") / "valid"
    model = gm.build_model(VALID, VALID.seed)
    model.save_pretrained(d, safe_serialization=True)
    return d


@pytest.fixture
def broken(valid_dir, tmp_path):
    """A fresh copy of the valid checkpoint to break."""
    d = tmp_path / "broken"
    shutil.copytree(valid_dir, d)
    return d


def _score(g3n, d, tmp_path) -> subprocess.CompletedProcess:
    return g3n.score(d, IDS, tmp_path / "out.npy", threads=1)


def assert_clean_failure(p: subprocess.CompletedProcess, *needles: str) -> None:
    info = describe_run(p)
    assert p.returncode != 0, f"g3n accepted a broken checkpoint\n{info}"
    assert p.returncode > 0, f"g3n died from signal {-p.returncode} instead of exiting with an error\n{info}"
    err = p.stderr or ""
    assert err.strip(), f"g3n failed without a message on stderr\n{info}"
    for bad in ("terminate called", "Segmentation fault", "AddressSanitizer", "core dumped"):
        assert bad not in err, f"g3n crashed ({bad!r})\n{info}"
    for n in needles:
        assert n in err, f"stderr does not mention {n!r}\n{info}"


def _edit_tensors(d, fn) -> None:
    path = d / "model.safetensors"
    tensors = gm.load_tensors(path)
    fn(tensors)
    gm.save_tensors(tensors, path)


def _edit_config(d, fn) -> None:
    cfg = gm.read_config(d)
    fn(cfg)
    gm.write_config(d, cfg)


# --------------------------------------------------------------------------------------------------------------


def test_valid_checkpoint_loads(g3n, valid_dir, tmp_path):
    """Baseline: the unbroken checkpoint scores fine (so the failures below are about the breakage)."""
    p = _score(g3n, valid_dir, tmp_path)
    assert p.returncode == 0, describe_run(p)


@pytest.mark.parametrize(
    "name",
    [
        "model.layers.1.self_attn.q_proj.weight",
        "model.layers.2.altup.correct_output_scale",
        "model.embed_tokens_per_layer.weight",
    ],
)
def test_missing_tensor(g3n, broken, tmp_path, name):
    _edit_tensors(broken, lambda t: t.pop(name))
    assert_clean_failure(_score(g3n, broken, tmp_path), name)


def _shape_str(shape) -> str:
    return "[" + ", ".join(str(int(x)) for x in shape) + "]"


WRONG_SHAPES = [
    # (tensor, how to break it)
    ("model.layers.1.self_attn.q_proj.weight", lambda t: t.t().contiguous()),  # [64, 32] -> [32, 64]
    ("model.layers.0.post_attention_layernorm.weight", lambda t: torch.cat([t, t[:1]])),  # [32] -> [33]
    ("model.layers.2.mlp.gate_proj.weight", lambda t: t[:80].contiguous()),  # [96, 32] -> [80, 32]
    ("model.per_layer_model_projection.weight", lambda t: t[:, :16].contiguous()),  # [32, 32] -> [32, 16]
]


@pytest.mark.parametrize("name,breaker", WRONG_SHAPES, ids=[w[0] for w in WRONG_SHAPES])
def test_wrong_shape(g3n, broken, tmp_path, name, breaker):
    shapes = {}

    def edit(t):
        shapes["expected"] = tuple(t[name].shape)
        t[name] = breaker(t[name])
        shapes["found"] = tuple(t[name].shape)

    _edit_tensors(broken, edit)
    assert shapes["expected"] != shapes["found"]
    assert_clean_failure(
        _score(g3n, broken, tmp_path), name, _shape_str(shapes["expected"]), _shape_str(shapes["found"])
    )


def _set(key, value):
    def f(cfg):
        cfg[key] = value(cfg) if callable(value) else value

    return f


BAD_CONFIGS = [
    ("num_kv_shared_layers", _set("num_kv_shared_layers", lambda c: c["num_hidden_layers"])),
    ("num_kv_shared_layers", _set("num_kv_shared_layers", lambda c: c["num_hidden_layers"] + 3)),
    ("head_dim", _set("head_dim", 0)),
    ("intermediate_size", _set("intermediate_size", lambda c: c["intermediate_size"][:-1])),
    ("layer_types", _set("layer_types", lambda c: c["layer_types"] + ["sliding_attention"])),
    ("activation_sparsity_pattern", _set("activation_sparsity_pattern", lambda c: c["activation_sparsity_pattern"][:-1])),
]


@pytest.mark.parametrize(
    "field,mutate",
    BAD_CONFIGS,
    ids=["kv_shared_eq_layers", "kv_shared_gt_layers", "head_dim_0", "intermediate_len", "layer_types_len",
         "sparsity_len"],
)
def test_inconsistent_config(g3n, broken, tmp_path, field, mutate):
    _edit_config(broken, mutate)
    assert_clean_failure(_score(g3n, broken, tmp_path), field)


def test_missing_config_json(g3n, broken, tmp_path):
    (broken / "config.json").unlink()
    assert_clean_failure(_score(g3n, broken, tmp_path), "config.json")


def test_unparsable_config_json(g3n, broken, tmp_path):
    (broken / "config.json").write_text('{"model_type": "gemma3n_text", "hidden_size": ')
    assert_clean_failure(_score(g3n, broken, tmp_path), "config.json")


def test_missing_safetensors(g3n, broken, tmp_path):
    (broken / "model.safetensors").unlink()
    assert_clean_failure(_score(g3n, broken, tmp_path), "safetensors")


def test_truncated_safetensors(g3n, broken, tmp_path):
    path = broken / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_clean_failure(_score(g3n, broken, tmp_path))


def test_missing_directory(g3n, tmp_path):
    d = tmp_path / "no_such_model_dir"
    assert_clean_failure(_score(g3n, d, tmp_path), str(d))


@pytest.mark.parametrize("bad_id", [256, 1_000_000, -1])
def test_token_id_out_of_vocabulary(g3n, valid_dir, tmp_path, bad_id):
    """Not a checkpoint error but the same contract: a clean refusal that names the offending id."""
    p = g3n.run("score", "-m", valid_dir, "--ids", f"2,5,{bad_id}", "--out", tmp_path / "out.npy", "--threads", "1")
    assert_clean_failure(p, str(bad_id))
