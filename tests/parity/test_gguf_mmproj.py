"""llama.cpp multimodal projector files ("mmproj") for Gemma 3n.

A small random Gemma3nForConditionalGeneration (a reduced MobileNet-V5 with every block kind llama.cpp's
converter can write, a reduced USM Conformer) is written as an mmproj GGUF with the PyPI `gguf` package,
mirroring what llama.cpp's `convert_hf_to_gguf.py --mmproj` writes for it, and g3n's `encode-image --mmproj`
/ `encode-audio --mmproj` must give the soft tokens that `-m DIR` gives from the checkpoint directory:
equal up to float rounding (relative 1e-6) when every tensor is F32, and close at the converter's own
output types (reported).

What is mirrored (ggml-org/llama.cpp, conversion/gemma.py `Gemma3nVisionAudioModel` and its bases
`ConformerAudioModel` (same file) and `MmprojModel` / `ModelBase.prepare_tensors` (conversion/base.py);
gguf-py/gguf/tensor_mapping.py and constants.py):
  * names: MobileNet-V5 blocks through the class's own `block_tensor_mapping`
    (model.vision_tower.timm_model.blocks.S.I.<x> -> v.blk.S.I.<x>); everything else through gguf-py's
    TensorNameMap for MODEL_ARCH.MMPROJ with block_count 128 (the "multiple encoders" hack of
    MmprojModel.__init__), after `modify_tensors` renamed model.audio_tower.conformer. -> conformer.layers.;
  * layouts: conv_stem.conv.bias and layer_scale.gamma unsqueezed to [1, C, 1, 1] (see GAMMA_NOTE); nothing
    else is reshaped or transposed for Gemma 3n;
  * types: prepare_tensors' rules (1-D and *_norm.weight F32, names not ending in .weight F32) with
    Gemma3nVisionAudioModel.tensor_force_quant (HF names containing "input_proj" F16 whatever --outtype: the
    audio SSCP's input_proj_linear; "stem" F32) and ConformerAudioModel's (audio convs F32), and the F16
    fallback when a row is not whole Q8_0 blocks (every k x k and 1 x 1 conv at q8_0);
  * metadata: general.architecture "clip", general.type "mmproj", clip.has_{vision,audio}_encoder,
    clip.{vision,audio}.projection_dim (the text hidden size), clip.vision.projector_type "gemma3nv",
    clip.audio.projector_type "gemma3na", image size 768 / patch size 3, the fake block count 128, ...
One deviation, named where it happens: the SSCP norm scales (subsample_conv_projection.conv_B.norm.weight)
have no entry in tensor_mapping.py (upstream's converter stops on them); they are written as
a.conv1d.B.norm.weight, the MODEL_TENSOR.A_ENC_CONV1D_NORM name Gemma 4 uses, which is what g3n reads.
llama.cpp itself implements no Gemma 3n audio graph (tensor_mapping.py: "it should be corrected in C++ code
when it's supported").

llama.cpp itself (llama-cpp-python's libmtmd, when installed) encodes an image from the same file and must
agree with g3n (test_llama_cpp_reads_the_same_file); that is what fixes the layout choices above.

Bad files (marker badinput): a text-model GGUF given as mmproj, a missing tensor, a wrong shape, another
projector type, an mmproj that does not fit the text model: each a clear error naming the problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import gemma3n_models as gm
import test_audio as ta
import test_vision as tv
from g3n_harness import check_ok, describe_run

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402

# A reduced MobileNet-V5 that llama.cpp can describe: every stage starts with a strided block (its graph strides
# the first block of each stage), no dw_end convs (its converter's block table has none), four stages (it fuses
# the ends of stages 2 and 3). Every other block kind of test_vision.TINY_ARCH is kept.
MMPROJ_ARCH = [
    ["er_r1_k3_s2_e4_c16", "er_r1_k3_s1_e2_c16"],
    ["uir_r1_a3_k5_s2_e3_c24", "uir_r1_a5_k0_s1_e2_c24", "uir_r1_a0_k3_s1_e2_c24"],
    ["uir_r1_a5_k5_s2_e2_c32", "mqa_r1_k3_h2_v2_s1_d8_c32", "uir_r1_a0_k0_s1_e2_c32"],
    ["uir_r1_a3_k3_s2_e2_c40", "mqa_r1_k3_h3_s1_d16_c40", "uir_r1_a0_k0_s1_e2_c40"],
]
# The released vocabulary layout (vision ids from 262144, audio from 262272): an mmproj does not record it.
TEXT = dict(vocab_size=262400, vocab_size_per_layer_input=262144, num_hidden_layers=2, layer_types=[gm.S, gm.F],
            activation_sparsity_pattern=[0.0, 0.0], hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
            head_dim=16, hidden_size_per_layer_input=8, laurel_rank=4, intermediate_size=64, sliding_window=16)
AUDIO = ta.AUDIO_CONFIGS["usm_small"]  # the released structure, narrow: what the file cannot say is the default

EXACT = 1e-6  # all-F32 file vs the checkpoint directory (same weights, same code)
# llama.cpp's own output types round weights to F16 (the audio input_proj_linear even at --outtype f32, the
# audio matrices and the vision projection to Q8_0 at q8_0); soft tokens move by about as much, relatively.
LOOSE = {"f32": 5e-3, "f16": 2e-2, "q8_0": 5e-2}


# --------------------------------------------------------------------------------------------------------------
# The writer: convert_hf_to_gguf.py --mmproj for Gemma3nForConditionalGeneration
# --------------------------------------------------------------------------------------------------------------

# Gemma3nVisionAudioModel.block_tensor_mapping (conversion/gemma.py): the suffixes after blocks.S.I.
BLOCK_SUFFIXES = [
    "conv_exp.weight", "bn1.weight", "conv_pwl.weight", "bn2.weight", "dw_start.conv.weight", "dw_start.bn.weight",
    "dw_mid.conv.weight", "dw_mid.bn.weight", "pw_exp.conv.weight", "pw_exp.bn.weight", "pw_proj.conv.weight",
    "pw_proj.bn.weight", "layer_scale.gamma", "attn.query.proj.weight", "attn.key.proj.weight",
    "attn.value.proj.weight", "attn.output.proj.weight", "attn.key.down_conv.weight", "attn.key.norm.weight",
    "attn.value.down_conv.weight", "attn.value.norm.weight", "norm.weight",
]
# No tensor_mapping.py entry (see the module docstring): A_ENC_CONV1D_NORM's name.
UNMAPPED_AUDIO = {f"model.audio_tower.subsample_conv_projection.conv_{b}.norm.weight": f"a.conv1d.{b}.norm.weight"
                  for b in range(2)}
FTYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "all-f32": gguf.LlamaFileType.ALL_F32}


# GAMMA_NOTE: Gemma3nVisionAudioModel.modify_tensors unsqueezes "conv_stem.conv.bias" and "layer_scale.gamma" to
# [1, C, 1, 1], but in the current conversion/gemma.py the block branch returns before that line, so a block's
# gamma would stay [C]. llama.cpp's own graph cannot run such a file: clip_graph_mobilenetv5::build_inverted_residual
# multiplies [W, H, C, B] activations by layer_scale_w directly (GGML_ASSERT(ggml_can_repeat(b, a)) fails with
# ne = {C}; checked with llama-cpp-python 0.3.36's libmtmd). Files llama.cpp runs hold [1, C, 1, 1] gammas, which is
# what the writer produces; g3n reads both (test_gamma_layouts).


def is_audio_tensor(name: str) -> bool:  # ConformerAudioModel.is_audio_tensor
    return any(p in name for p in ["audio", "codebook", "conformer", "depth_embedding", "depthformer", "depth_linear"])


def convert_tensor(tmap, name: str, data: np.ndarray, gamma_1d: bool = False):
    """Gemma3nVisionAudioModel.modify_tensors (+ ConformerAudioModel.modify_tensors for audio): (new name, data)."""
    if is_audio_tensor(name):
        n = name.replace("model.audio_tower.conformer.", "conformer.layers.")
        # ConformerAudioModel: its batch-norm folding and conv reshapes match lfm2 names only, none of Gemma 3n's.
        new = tmap.get_name(n, try_suffixes=(".weight", ".bias", ".input_max", ".input_min", ".output_max", ".output_min"))
        if new is None:
            new = UNMAPPED_AUDIO[name]  # upstream: ValueError("Can not map tensor ...")
        yield new, data
    if not (name.startswith("model.embed_vision.") or name.startswith("model.vision_tower.")):
        return
    if name.startswith("model.vision_tower.timm_model.blocks."):
        parts = name.split(".")  # custom_map: model, vision_tower, timm_model, blocks, bid, sid, suffix...
        suffix = ".".join(parts[6:])
        assert suffix in BLOCK_SUFFIXES, f"llama.cpp's converter cannot write {name}"
        if suffix == "layer_scale.gamma" and not gamma_1d:
            data = data[None, :, None, None]  # see GAMMA_NOTE
        yield f"v.blk.{parts[4]}.{parts[5]}.{suffix}", data
        return
    new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
    assert new is not None, name
    if new.endswith("conv_stem.conv.bias") or new.endswith("layer_scale.gamma"):
        data = data[None, :, None, None]  # unsqueeze(0).unsqueeze(-1).unsqueeze(-1): [1, C, 1, 1]
    yield new, data


def force_quant(name: str):
    """Gemma3nVisionAudioModel.tensor_force_quant -> ConformerAudioModel's -> MmprojModel's (name = the HF name)."""
    if "input_projection" in name or "input_proj" in name:
        return QT.F16
    if ".embeddings." in name or "stem" in name:
        return QT.F32
    if is_audio_tensor(name) and (".conv" in name or "_conv" in name and ".weight" in name):
        return QT.F32
    return False


def tensor_type(name: str, new_name: str, data: np.ndarray, outtype: str):
    """ModelBase.prepare_tensors' choice of type ("all-f32": every tensor F32, which llama.cpp never writes)."""
    if outtype == "all-f32":
        return QT.F32
    q = force_quant(name)
    if data.ndim <= 1 or new_name.endswith("_norm.weight"):
        q = QT.F32
    # (none of the always-F32 MODEL_TENSORs of that list is a Gemma 3n mmproj tensor)
    if q is False and new_name[-7:] not in (".weight", ".lora_a", ".lora_b"):
        q = QT.F32
    if q is False:
        q = {"f32": QT.F32, "f16": QT.F16, "q8_0": QT.Q8_0}[outtype]
    return q


def write_mmproj(model, out: Path, outtype: str = "f16", drop=(), replace=None, meta=None, gamma_1d=False) -> Path:
    """The mmproj llama.cpp's converter writes for `model` (drop / replace / meta: for making bad files;
    gamma_1d: layer_scale.gamma as the current converter's code leaves it, see GAMMA_NOTE)."""
    cfg = model.config
    vc, ac = cfg.vision_config, cfg.audio_config
    n_embd_text = cfg.text_config.hidden_size
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, 128)  # block_count 128 with two encoders
    w = gguf.GGUFWriter(str(out), arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ])  # "clip"
    replace = replace or {}
    for name, t in model.state_dict().items():
        if "language_model." in name:  # MmprojModel.filter_tensors
            continue
        data = t.detach().to(torch.float32).numpy()  # prepare_tensors: non-F16/F32 -> F32
        for new_name, d in convert_tensor(tmap, name, data, gamma_1d):
            if new_name in drop:
                continue
            d = replace.get(new_name, d)
            q = tensor_type(name, new_name, d, outtype)
            try:
                qd = gguf.quants.quantize(d, q)
            except gguf.QuantError:  # a row that is not whole blocks: "falling back to F16"
                q = QT.F16
                qd = gguf.quants.quantize(d, q)
            w.add_tensor(new_name, qd, raw_dtype=q)
    # prepare_metadata: set_type, Metadata.set_gguf_meta_model (general.name), set_gguf_parameters
    w.add_type(gguf.GGUFType.MMPROJ)
    w.add_name(out.stem)
    w.add_file_type(FTYPES[outtype])
    # MmprojModel.set_gguf_parameters, with Gemma3nVisionAudioModel.__init__'s hparams
    w.add_clip_has_vision_encoder(True)
    w.add_vision_projection_dim(n_embd_text)
    w.add_vision_image_size(768)  # preprocessor_config size.height (default 768)
    w.add_vision_patch_size(768 // 256)  # image_size // image_seq_length
    w.add_vision_embedding_length(vc.hidden_size)
    w.add_vision_feed_forward_length(getattr(vc, "intermediate_size", 2048) * 4)
    w.add_vision_block_count(128)  # "fake value for audio encoder, vision encoder doesn't use it"
    w.add_vision_head_count(getattr(vc, "num_attention_heads", 8))
    w.add_vision_image_mean([0.0, 0.0, 0.0])  # "MobileNetV5 does not use image_mean/std"
    w.add_vision_image_std([1.0, 1.0, 1.0])
    w.add_clip_has_audio_encoder(True)
    w.add_audio_projection_dim(n_embd_text)
    w.add_audio_embedding_length(ac.hidden_size)
    w.add_audio_feed_forward_length(getattr(ac, "intermediate_size", 6144))
    w.add_audio_block_count(ac.conf_num_hidden_layers)
    w.add_audio_head_count(ac.conf_num_attention_heads)
    # Gemma3nVisionAudioModel.set_gguf_parameters
    w.add_clip_vision_projector_type(gguf.VisionProjectorType.GEMMA3NV)
    w.add_vision_attention_layernorm_eps(getattr(vc, "layer_norm_eps", 1e-6))
    w.add_clip_audio_projector_type(gguf.VisionProjectorType.GEMMA3NA)
    w.add_audio_num_mel_bins(ac.input_feat_size)
    w.add_audio_attention_layernorm_eps(1e-5)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in (meta or {}).items():
        if key in w.kv_data[0]:
            del w.kv_data[0][key]
        w.add_string(key, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


# --------------------------------------------------------------------------------------------------------------
# Model and files
# --------------------------------------------------------------------------------------------------------------


class Case:
    def __init__(self, root: Path, text: dict = TEXT):
        from timm.models._efficientnet_builder import decode_arch_def
        from transformers import Gemma3nAudioConfig, Gemma3nConfig, Gemma3nTextConfig, Gemma3nVisionConfig

        kw = dict(gm.TEXT_DEFAULTS)
        kw.update(text)
        vc = Gemma3nVisionConfig(model_args={"block_args": decode_arch_def(MMPROJ_ARCH), "stem_size": 16})
        ac = Gemma3nAudioConfig(**AUDIO)
        torch.manual_seed(0)
        self.model = gm.instantiate(Gemma3nConfig(text_config=Gemma3nTextConfig(**kw), vision_config=vc, audio_config=ac))
        gm.randomise_(self.model, 11)
        tv.randomise_vision_(self.model, 12)
        ta.randomise_audio_(self.model, 13)
        self.root = root
        self.dir = root / "checkpoint"
        self.model.save_pretrained(self.dir, safe_serialization=True)
        self._files: dict[str, Path] = {}

    def mmproj(self, outtype: str) -> Path:
        if outtype not in self._files:
            self._files[outtype] = write_mmproj(self.model, self.root / f"mmproj-{outtype}.gguf", outtype)
        return self._files[outtype]


@pytest.fixture(scope="module")
def case(tmp_path_factory, _torch_threads):
    tv._timm_or_skip()
    return Case(tmp_path_factory.mktemp("mmproj"))


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


def encode_image(g3n, tmp: Path, pixels: Path, tag: str, *model_args) -> tuple[np.ndarray, np.ndarray]:
    out, feats = tmp / f"{tag}_tok.npy", tmp / f"{tag}_feat.npy"
    p = g3n.run("encode-image", *model_args, "--pixels", pixels, "--out", out, "--features-out", feats,
                "--threads", str(g3n.threads))
    check_ok(p, f"encode-image {tag}")
    if "--mmproj" in model_args:  # the structure came from the tensors (not the released tower)
        assert "vision: MobileNet-V5 of 4 stages, 11 blocks (from the tensors)" in p.stderr, p.stderr
    return np.load(out), np.load(feats)


def encode_audio(g3n, tmp: Path, audio: Path, tag: str, *model_args):
    out, mask, rows = tmp / f"{tag}_soft.npy", tmp / f"{tag}_mask.npy", tmp / f"{tag}_rows.npy"
    p = g3n.run("encode-audio", *model_args, "--audio", audio, "--out", out, "--mask-out", mask, "--prompt-out", rows,
                "--threads", str(g3n.threads))
    check_ok(p, f"encode-audio {tag}")
    return np.load(out), np.load(mask).astype(bool), np.load(rows)


@pytest.fixture(scope="module")
def pixels(tmp_path_factory):
    p = tmp_path_factory.mktemp("mmproj_px") / "px.npy"
    np.save(p, np.random.default_rng(3).random((3, 256, 256), dtype=np.float32))
    return p


@pytest.fixture(scope="module")
def vision_dir_tokens(g3n, case, pixels, tmp_path_factory):
    return encode_image(g3n, tmp_path_factory.mktemp("mmproj_dir"), pixels, "dir", "-m", case.dir)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return ta.make_clip("clip_7.3s", tmp_path_factory.mktemp("mmproj_audio"))


@pytest.fixture(scope="module")
def audio_dir_tokens(g3n, case, clip, tmp_path_factory):
    return encode_audio(g3n, tmp_path_factory.mktemp("mmproj_adir"), clip, "dir", "-m", case.dir)


# --------------------------------------------------------------------------------------------------------------
# Layout: what the writer produced is what llama.cpp's names and shapes say
# --------------------------------------------------------------------------------------------------------------


def test_writer_layout(case):
    """Spot checks of the file against llama.cpp's names (constants.py TENSOR_NAMES, clip-impl.h TN_MNV5_*)."""
    r = gguf.GGUFReader(case.mmproj("f16"))
    t = {x.name: x for x in r.tensors}
    assert str(bytes(r.fields["general.architecture"].parts[-1]), "utf-8") == "clip"
    for name in ["v.conv_stem.conv.weight", "v.conv_stem.conv.bias", "v.conv_stem.bn.weight", "v.blk.0.0.conv_exp.weight",
                 "v.blk.1.0.dw_mid.conv.weight", "v.blk.2.1.attn.key.down_conv.weight", "v.blk.3.0.layer_scale.gamma",
                 "v.msfa.ffn.pw_exp.conv.weight", "v.msfa.norm.weight", "mm.input_projection.weight",
                 "mm.soft_emb_norm.weight", "mm.embedding.weight", "mm.hard_emb_norm.weight", "a.conv1d.0.weight",
                 "a.pre_encode.out.weight", "a.blk.1.per_dim_scale", "a.blk.0.linear_pos.weight", "a.blk.0.conv_dw.weight",
                 "a.blk.1.layer_pre_norm.weight", "mm.a.input_projection.weight", "mm.a.embedding.weight"]:
        assert name in t, name
    assert list(t["v.conv_stem.conv.bias"].shape) == [1, 1, 16, 1]  # ne of a [1, C, 1, 1] tensor
    assert list(t["v.blk.3.0.layer_scale.gamma"].shape) == [1, 1, 40, 1]
    assert t["mm.input_projection.weight"].tensor_type == QT.F16 and t["v.conv_stem.conv.weight"].tensor_type == QT.F32
    assert t["v.blk.0.0.conv_exp.weight"].tensor_type == QT.F16 and t["a.conv1d.0.weight"].tensor_type == QT.F32
    r8 = {x.name: x for x in gguf.GGUFReader(case.mmproj("q8_0")).tensors}
    assert r8["a.blk.0.attn_q.weight"].tensor_type == QT.Q8_0 and r8["mm.embedding.weight"].tensor_type == QT.Q8_0
    assert r8["v.blk.0.0.conv_exp.weight"].tensor_type == QT.F16  # k x k rows: not whole Q8_0 blocks


# --------------------------------------------------------------------------------------------------------------
# Vision
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("outtype", ["all-f32", "f32", "f16", "q8_0"])
def test_vision_soft_tokens_match_directory(g3n, case, pixels, vision_dir_tokens, tmp_path, record, outtype):
    ref_tok, ref_feat = vision_dir_tokens
    tok, feat = encode_image(g3n, tmp_path, pixels, outtype, "--mmproj", case.mmproj(outtype))
    assert tok.shape == ref_tok.shape == (256, TEXT["hidden_size"]) and feat.shape == (256, 2048)
    e_tok, e_feat = rel_err(tok, ref_tok), rel_err(feat, ref_feat)
    hf_tok, _ = tv.reference_soft_tokens(case.model, np.load(pixels))
    e_hf = rel_err(tok, hf_tok)
    bound = EXACT if outtype == "all-f32" else LOOSE[outtype]
    ok = e_tok <= bound and e_feat <= bound
    record("mmproj vision", outtype, f"rel vs dir: tok={e_tok:.1e} feat={e_feat:.1e}; vs transformers {e_hf:.1e}", ok)
    assert ok, f"{outtype}: relative error vs the directory: tokens {e_tok:.3g}, tower {e_feat:.3g} (bound {bound})"


def test_vision_with_text_model(g3n, case, pixels, vision_dir_tokens, tmp_path):
    """-m names the text model the projector belongs to (checkpoint directory or GGUF): checked, same tokens."""
    ref_tok, _ = vision_dir_tokens
    tok, _ = encode_image(g3n, tmp_path, pixels, "withdir", "--mmproj", case.mmproj("all-f32"), "-m", case.dir)
    assert rel_err(tok, ref_tok) <= EXACT
    text = write_text_gguf(tmp_path / "text.gguf", TEXT["hidden_size"])
    tok, _ = encode_image(g3n, tmp_path, pixels, "withgguf", "--mmproj", case.mmproj("all-f32"), "-m", text)
    assert rel_err(tok, ref_tok) <= EXACT


def test_gamma_layouts(g3n, case, pixels, vision_dir_tokens, tmp_path):
    """layer_scale.gamma as [C] (what the current converter code leaves, see GAMMA_NOTE) reads the same."""
    f = write_mmproj(case.model, tmp_path / "gamma1d.gguf", "all-f32", gamma_1d=True)
    tok, _ = encode_image(g3n, tmp_path, pixels, "gamma1d", "--mmproj", f)
    assert rel_err(tok, vision_dir_tokens[0]) <= EXACT


def test_released_tower_is_recognised(g3n, tmp_path, record, _torch_threads):
    """The real mobilenetv5_300m_enc (294M random parameters, written F16 as `--outtype f16` would: ~600 MB) is
    recognised as such (no block list needed) and computes transformers' soft tokens. ~30 s;
    G3N_TEST_VISION_FULL=0 skips it, as it skips test_vision's full-size case."""
    import os

    if os.environ.get("G3N_TEST_VISION_FULL", "1") in ("0", "false", "no"):
        pytest.skip("G3N_TEST_VISION_FULL=0: real-shape MobileNet-V5 skipped")
    tv._timm_or_skip()
    from transformers import Gemma3nAudioConfig, Gemma3nConfig, Gemma3nTextConfig, Gemma3nVisionConfig

    kw = dict(gm.TEXT_DEFAULTS)
    kw.update(TEXT, vocab_size=512, vocab_size_per_layer_input=512)
    model = gm.instantiate(Gemma3nConfig(text_config=Gemma3nTextConfig(**kw), vision_config=Gemma3nVisionConfig(),
                                         audio_config=Gemma3nAudioConfig(**AUDIO)))
    tv.randomise_vision_(model, 1)
    f = write_mmproj(model, tmp_path / "mmproj-300m-f16.gguf", "f16")
    px = np.random.default_rng(1).random((3, 256, 256), dtype=np.float32)
    np.save(tmp_path / "px.npy", px)
    ref, _ = tv.reference_soft_tokens(model, px)
    del model
    p = g3n.run("encode-image", "--mmproj", f, "--pixels", tmp_path / "px.npy", "--out", tmp_path / "tok.npy",
                "--threads", str(g3n.threads))
    check_ok(p, "encode-image 300m")
    f.unlink()
    assert "vision: mobilenetv5_300m_enc;" in p.stderr, p.stderr
    e = rel_err(np.load(tmp_path / "tok.npy"), ref)
    record("mmproj vision", "300m f16", f"rel vs transformers={e:.1e}", e <= LOOSE["f16"], "recognised as mobilenetv5_300m_enc")
    assert e <= LOOSE["f16"]


# llama.cpp through llama-cpp-python, in a child process (a GGML_ASSERT aborts the process).
LLAMA_CPP_ENCODE = r"""
import ctypes, sys
import numpy as np
import llama_cpp
from llama_cpp import mtmd_cpp as M
mmproj, text, image, out = sys.argv[1:5]
llama_cpp.llama_backend_init()
model = llama_cpp.llama_model_load_from_file(text.encode(), llama_cpp.llama_model_default_params())
assert model, "llama.cpp could not load the text model"
cp = M.mtmd_context_params_default()
cp.use_gpu, cp.n_threads, cp.warmup, cp.print_timings = False, 2, False, False
ctx = M.mtmd_init_from_file(mmproj.encode(), model, cp)
assert ctx, "llama.cpp could not load the mmproj"
a = np.load(image)
h, w, _ = a.shape
bitmap = M.mtmd_bitmap_init(w, h, (ctypes.c_uint8 * a.size).from_buffer_copy(np.ascontiguousarray(a).tobytes()))
prompt = b"look: " + M.mtmd_default_marker()
t = M.mtmd_input_text(prompt, len(prompt), False, True)
chunks = M.mtmd_input_chunks_init()
assert M.mtmd_tokenize(ctx, chunks, ctypes.byref(t), (M.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) == 0
for i in range(M.mtmd_input_chunks_size(chunks)):
    c = M.mtmd_input_chunks_get(chunks, i)
    if M.mtmd_input_chunk_get_type(c) == 0:
        continue
    n, d = M.mtmd_input_chunk_get_n_tokens(c), llama_cpp.llama_model_n_embd(model)
    assert M.mtmd_encode_chunk(ctx, c) == 0
    np.save(out, np.ctypeslib.as_array(M.mtmd_get_output_embd(ctx), shape=(n * d,)).reshape(n, d).copy())
"""


def test_llama_cpp_reads_the_same_file(g3n, tmp_path, record, _torch_threads):
    """llama.cpp's MobileNet-V5 (clip_graph_mobilenetv5) on the writer's f16 file gives g3n's soft tokens.
    Its mtmd_init refuses an mmproj unless mm.input_projection's ne[0] (the vision width, 2048) equals the text
    model's n_embd, so this case has a 2048-wide text model; the text model is converted with
    bench/convert_llamacpp.py (laurel rank 64 and PLE width 256, which llama.cpp hard-codes)."""
    import subprocess
    import sys

    tv._timm_or_skip()
    pytest.importorskip("llama_cpp")
    try:
        from llama_cpp import mtmd_cpp  # noqa: F401
    except Exception as e:  # noqa: BLE001 - an older llama-cpp-python without libmtmd
        pytest.skip(f"llama-cpp-python has no mtmd: {e}")
    from transformers import Gemma3nForCausalLM, Gemma3nTextConfig

    wide = dict(TEXT, hidden_size=2048, vocab_size=512, vocab_size_per_layer_input=512)
    c = Case(tmp_path / "wide", wide)
    mmproj = c.mmproj("f16")
    kw = dict(gm.TEXT_DEFAULTS)
    kw.update(wide, hidden_size_per_layer_input=256, laurel_rank=64)
    torch.manual_seed(1)
    Gemma3nForCausalLM(Gemma3nTextConfig(**kw)).eval().save_pretrained(tmp_path / "text_ckpt")
    repo = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, str(repo / "bench" / "convert_llamacpp.py"), str(tmp_path / "text_ckpt"), "--out",
                        str(tmp_path / "text.gguf"), "--type", "f32", "--jobs", "1", "--allow-mismatch"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    # A 768 x 768 image (llama.cpp's clip.vision.image_size): its preprocessing is then x / 255, as g3n's pixels.
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:768, 0:768]
    img = (np.stack([x * 255 / 767, y * 255 / 767, (x + y) % 256], -1) * 0.7 + rng.integers(0, 77, (768, 768, 3)))
    img = img.astype(np.uint8)
    np.save(tmp_path / "img.npy", img)
    np.save(tmp_path / "px.npy", np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / np.float32(255))
    (tmp_path / "encode.py").write_text(LLAMA_CPP_ENCODE)
    p = subprocess.run([sys.executable, str(tmp_path / "encode.py"), str(mmproj), str(tmp_path / "text.gguf"),
                        str(tmp_path / "img.npy"), str(tmp_path / "lcpp.npy")], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"llama.cpp failed on the mmproj:\n{p.stderr[-4000:]}"
    lcpp = np.load(tmp_path / "lcpp.npy")
    tok, _ = encode_image(g3n, tmp_path, tmp_path / "px.npy", "lcpp", "--mmproj", mmproj)
    assert lcpp.shape == tok.shape == (256, 2048)
    e = rel_err(tok, lcpp)
    # llama.cpp runs its convolutions on F16 weights with its own kernels: ~1e-3 apart on this tower.
    record("mmproj vision", "llama.cpp (libmtmd)", f"rel g3n vs llama.cpp={e:.1e}", e <= 1e-2, "same f16 file, 768 px")
    assert e <= 1e-2


# --------------------------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("outtype", ["all-f32", "f32", "f16", "q8_0"])
def test_audio_soft_tokens_match_directory(g3n, case, clip, audio_dir_tokens, tmp_path, record, outtype):
    ref, ref_valid, ref_rows = audio_dir_tokens
    soft, valid, rows = encode_audio(g3n, tmp_path, clip, outtype, "--mmproj", case.mmproj(outtype), "-m", case.dir)
    assert soft.shape == ref.shape
    np.testing.assert_array_equal(valid, ref_valid)
    e, e_rows = rel_err(soft, ref), rel_err(rows, ref_rows)
    bound = EXACT if outtype == "all-f32" else LOOSE[outtype]
    ok = e <= bound and e_rows <= bound
    record("mmproj audio", outtype, f"rel vs dir: soft={e:.1e} prompt rows={e_rows:.1e}", ok, f"{soft.shape[0]} tokens")
    assert ok, f"{outtype}: relative error vs the directory: soft tokens {e:.3g}, prompt rows {e_rows:.3g} (bound {bound})"


def test_audio_matches_transformers(g3n, case, clip, tmp_path):
    """The mmproj path against the reference itself (the directory path is checked in test_audio.py)."""
    samples = tmp_path / "samples.npy"
    out = tmp_path / "soft.npy"
    check_ok(g3n.run("encode-audio", "--mmproj", case.mmproj("all-f32"), "--audio", clip, "--out", out,
                     "--samples-out", samples), "encode-audio")
    mel, mask = ta.reference_features(np.load(samples))
    with torch.no_grad():
        ref = case.model.model.get_audio_features(torch.from_numpy(mel)[None], ~torch.from_numpy(mask)[None])
    ref = ref.pooler_output[0].double().numpy()
    assert rel_err(np.load(out), ref) <= ta.ENCODER_TOL


# --------------------------------------------------------------------------------------------------------------
# Bad files
# --------------------------------------------------------------------------------------------------------------


def write_text_gguf(path: Path, hidden: int, vocab: int = 512) -> Path:
    """Enough of a gemma3n text GGUF for g3n to read its sizes (and to be mistaken for an mmproj)."""
    w = gguf.GGUFWriter(str(path), arch="gemma3n")
    w.add_embedding_length(hidden)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((vocab, hidden), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def run_bad(g3n, tmp: Path, pixels: Path, mmproj: Path, *extra, cmd="encode-image"):
    if cmd == "encode-image":
        p = g3n.run("encode-image", "--mmproj", mmproj, "--pixels", pixels, "--out", tmp / "o.npy", *extra)
    else:
        p = g3n.run("encode-audio", "--mmproj", mmproj, "--audio", pixels, "--out", tmp / "o.npy", *extra)
    assert p.returncode == 1, describe_run(p)
    assert "g3n: error:" in p.stderr, p.stderr
    return p.stderr


@pytest.mark.badinput
def test_text_model_given_as_mmproj(g3n, pixels, tmp_path):
    text = write_text_gguf(tmp_path / "text.gguf", 32)
    err = run_bad(g3n, tmp_path, pixels, text)
    assert "general.architecture is 'gemma3n'" in err and "not a llama.cpp multimodal projector" in err, err
    assert str(text) in err, err


@pytest.mark.badinput
def test_missing_tensors_are_named(g3n, case, pixels, clip, tmp_path):
    # a tensor the structure is read from
    f = write_mmproj(case.model, tmp_path / "no_key.gguf", "f16", drop={"v.blk.2.1.attn.key.proj.weight"})
    err = run_bad(g3n, tmp_path, pixels, f)
    assert "missing tensor v.blk.2.1.attn.key.proj.weight" in err, err
    assert "model.vision_tower.timm_model.blocks.2.1.attn.key.proj.weight" in err, err
    # tensors the encoders' registries ask for: every one named, by both names
    f = write_mmproj(case.model, tmp_path / "no_norms.gguf", "f16",
                     drop={"v.blk.1.0.dw_start.bn.weight", "mm.soft_emb_norm.weight", "a.blk.1.attn_k.weight"})
    err = run_bad(g3n, tmp_path, pixels, f)
    assert "missing tensor model.vision_tower.timm_model.blocks.1.0.dw_start.bn.weight [v.blk.1.0.dw_start.bn.weight]" in err, err
    err = run_bad(g3n, tmp_path, clip, f, cmd="encode-audio")
    assert "model.audio_tower.conformer.1.attention.attn.k_proj.weight [a.blk.1.attn_k.weight]" in err, err


@pytest.mark.badinput
def test_wrong_shapes_are_named(g3n, case, pixels, tmp_path):
    P = TEXT["hidden_size"]
    f = write_mmproj(case.model, tmp_path / "bad_shapes.gguf", "f16",
                     replace={"v.blk.0.1.bn1.weight": np.ones(24, np.float32),
                              "mm.input_projection.weight": np.zeros((P + 1, 2048), np.float32)})
    err = run_bad(g3n, tmp_path, pixels, f)
    assert "[v.blk.0.1.bn1.weight] has shape [24], expected [32]" in err, err
    # the projection is checked against the projection width the file declares
    f = write_mmproj(case.model, tmp_path / "bad_proj.gguf", "f16",
                     replace={"mm.input_projection.weight": np.zeros((P + 1, 2048), np.float32)})
    err = run_bad(g3n, tmp_path, pixels, f)
    assert f"[mm.input_projection.weight] has shape [{P + 1}, 2048], expected [{P}, 2048]" in err, err


@pytest.mark.badinput
def test_other_projector_and_text_model_mismatch(g3n, case, pixels, tmp_path):
    f = write_mmproj(case.model, tmp_path / "gemma3.gguf", "f16", meta={"clip.vision.projector_type": "gemma3"})
    err = run_bad(g3n, tmp_path, pixels, f)
    assert "vision projector type is 'gemma3', not Gemma 3n's 'gemma3nv'" in err, err
    text = write_text_gguf(tmp_path / "text64.gguf", 64)
    err = run_bad(g3n, tmp_path, pixels, case.mmproj("f16"), "-m", text)
    assert f"projects to width {TEXT['hidden_size']} but the text model's hidden size is 64" in err, err
    # and an mmproj given where the text model goes is refused, not read as a checkpoint
    err = run_bad(g3n, tmp_path, pixels, case.mmproj("f16"), "-m", case.mmproj("f16"))
    assert "multimodal projector (mmproj), not a text model" in err, err


@pytest.mark.badinput
def test_truncated_mmproj(g3n, case, pixels, tmp_path):
    data = case.mmproj("f16").read_bytes()
    for cut in (16, len(data) // 3, len(data) - 7):
        f = tmp_path / f"cut{cut}.gguf"
        f.write_bytes(data[:cut])
        err = run_bad(g3n, tmp_path, pixels, f)
        assert str(f) in err, err
