"""Vision path: g3n vs transformers (+ timm) on images.

(a) Preprocessing: `g3n preprocess-image` vs transformers' SiglipImageProcessor configured as Gemma 3n's
    (size N x N, bilinear, rescale 1/255, no normalisation) on synthetic files written here with PIL:
    max |difference| <= 1/255 (the reference resizes 8-bit images with torchvision's antialiased
    bilinear kernel, g3n with Pillow's fixed-point algorithm; they may round one level apart).
(b) Encoder: `g3n encode-image` vs Gemma3nModel.get_image_features (TimmWrapper -> MobileNetV5Encoder
    -> * sqrt(2048) -> embed_vision soft path) on a reduced MobileNet-V5 (timm block args, small widths, every
    block kind: er with and without skip, uir with dw_start / dw_mid / dw_end, MQA with and without K/V
    stride) inside a random Gemma3nForConditionalGeneration saved with save_pretrained; every vision weight
    randomised so that every path contributes. Exact pixels are fed through --pixels. Max error relative to
    the largest reference value <= 1e-4. Also the real-shape mobilenetv5_300m_enc in bfloat16 at 256 px
    (~20 s; G3N_TEST_VISION_FULL=0 skips it).
(c) Bad files through the CLI (marker badinput): a clear error, never a crash.
"""

from __future__ import annotations

import copy
import io
import math
import os
import shutil
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import gemma3n_models as gm
from g3n_harness import check_ok, describe_run

TOL_PIXELS = 1.0 / 255 + 1e-6
TOL_REL = 1e-4

# Every block kind of MobileNet-V5: er (strided, then with skip), uir with dw_start + strided dw_mid,
# dw_start only (ConvNeXt-like), dw_mid + dw_end, FFN-only; mqa with K/V stride 2 and without.
TINY_ARCH = [
    ["er_r1_k3_s2_e4_c16", "er_r1_k3_s1_e2_c16"],
    ["uir_r1_a3_k5_s2_e3_c24", "uir_r1_a5_k0_s1_e2_c24", "uir_r1_a0_k3_p3_s1_e2_c24"],
    ["uir_r1_a5_k5_s2_e2_c32", "mqa_r1_k3_h2_v2_s1_d8_c32", "uir_r1_a0_k0_s1_e2_c32"],
    ["uir_r1_a3_k3_s2_e2_c40", "mqa_r1_k3_h3_s1_d16_c40", "uir_r1_a0_k0_s1_e2_c40"],
]


def _timm_or_skip():
    if not gm.timm_usable():
        pytest.skip("timm (with a working torchvision) is not importable: no MobileNet-V5 reference")


def _processor(size: int):
    from transformers import SiglipImageProcessor
    from transformers.image_utils import PILImageResampling

    # Gemma 3n's preprocessor_config.json: SiglipImageProcessorFast, 768x768, resample 2 (bilinear),
    # rescale 1/255, do_normalize false.
    return SiglipImageProcessor(
        size={"height": size, "width": size},
        resample=PILImageResampling.BILINEAR,
        do_resize=True,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=False,
    )


def reference_pixels_pil(path: Path, size: int) -> np.ndarray:
    """The same processor with transformers' PIL backend (SiglipImageProcessorPil): Pillow's resize."""
    from PIL import Image, ImageOps
    from transformers.image_utils import PILImageResampling
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    proc = SiglipImageProcessorPil(size={"height": size, "width": size}, resample=PILImageResampling.BILINEAR,
                                   do_rescale=True, rescale_factor=1 / 255, do_normalize=False)
    return proc(images=ImageOps.exif_transpose(Image.open(path)), return_tensors="np")["pixel_values"][0]


def _torchvision_usable() -> bool:
    try:
        import torchvision  # noqa: F401  (fails when no torchvision matches the installed torch)

        return True
    except Exception:
        return False


def reference_pixels(path: Path, size: int) -> np.ndarray:
    """What transformers feeds the model for an image file: PIL open, EXIF transpose (load_image), processor
    (the default torchvision backend; the PIL backend where torchvision is not importable)."""
    from PIL import Image, ImageOps

    if not _torchvision_usable():
        return reference_pixels_pil(path, size)

    img = Image.open(path)
    img = ImageOps.exif_transpose(img)
    return _processor(size)(images=img, return_tensors="pt")["pixel_values"][0].numpy()


def g3n_pixels(g3n, path: Path, size: int, out: Path) -> np.ndarray:
    p = g3n.run("preprocess-image", "--image", path, "--image-size", str(size), "--out", out)
    check_ok(p, f"preprocess-image {path.name}")
    return np.load(out)


# --------------------------------------------------------------------------------------------------------------
# (a) preprocessing
# --------------------------------------------------------------------------------------------------------------


def _png16_rgb(path: Path, a: np.ndarray) -> None:
    """A 16-bit RGB PNG (PIL cannot write one)."""
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(data)


def synthetic_images(d: Path) -> dict[str, Path]:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    out: dict[str, Path] = {}

    def save(name, img, **kw):
        p = d / name
        img.save(p, **kw)
        out[name] = p

    y, x = np.mgrid[0:480, 0:640]
    grad = np.stack([x * 255 / 639, y * 255 / 479, (x + y) * 255 / 1118], -1).astype(np.uint8)
    save("gradient.png", Image.fromarray(grad))
    save("noise.png", Image.fromarray(rng.integers(0, 256, (333, 517, 3), dtype=np.uint8)))
    txt = Image.new("RGB", (1000, 700), "white")
    dr = ImageDraw.Draw(txt)
    for i in range(40):
        dr.text((10 + (i % 4) * 240, 10 + (i // 4) * 68), f"Gemma 3n line {i} |||/// ###", fill=(0, 0, 0))
        dr.line((0, 17 * i, 1000, 17 * i + 3), fill=(200, 30, 30), width=1)
    save("text.png", txt)
    rgba = np.concatenate([grad[:200, :300], (np.arange(300)[None, :] * 255 // 299).repeat(200, 0)[..., None]], -1)
    save("alpha.png", Image.fromarray(rgba.astype(np.uint8), "RGBA"))
    la = np.stack([grad[:90, :70, 0], grad[:90, :70, 1]], -1)
    save("grey_alpha.png", Image.fromarray(la, "LA"))
    save("one_pixel.png", Image.fromarray(np.array([[[12, 200, 99]]], np.uint8)))
    wide = rng.integers(0, 256, (300, 4000, 3), dtype=np.uint8)
    wide[:, ::7] = 255
    save("wide_4000x300.png", Image.fromarray(wide))
    save("grey.png", Image.fromarray(grad[:77, :123, 1], "L"))
    g16 = (np.mgrid[0:60, 0:80][1] * 3 + np.mgrid[0:60, 0:80][0]).astype(np.uint16)  # 0..~300: PIL clips at 255
    save("grey16.png", Image.fromarray(g16))
    _png16_rgb(d / "rgb16.png", (rng.integers(0, 65536, (50, 70, 3))).astype(np.uint16))
    out["rgb16.png"] = d / "rgb16.png"
    pal = Image.fromarray(grad[:100, :150]).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    save("palette_transparent.gif", pal, transparency=3)
    save("palette.png", pal)
    save("bitmap.bmp", Image.fromarray(grad[:101, :203]))
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return synthetic_images(tmp_path_factory.mktemp("vision_images"))


@pytest.mark.parametrize("size", [768, 256])
def test_preprocess_matches_processor(g3n, images, tmp_path, record, size):
    worst = 0.0
    for name, path in images.items():
        if size == 256 and name not in ("gradient.png", "text.png", "alpha.png", "one_pixel.png"):
            continue
        ref = reference_pixels(path, size)
        got = g3n_pixels(g3n, path, size, tmp_path / f"{name}.npy")
        assert got.shape == ref.shape == (3, size, size), (name, got.shape, ref.shape)
        assert got.dtype == np.float32
        err = float(np.abs(got - ref).max())
        worst = max(worst, err)
        assert err <= TOL_PIXELS, f"{name} at {size}: max |g3n - reference| = {err * 255:.2f}/255"
        # Lossless files: the same 8-bit levels as the PIL backend (g3n implements Pillow's fixed-point
        # resize; that backend rescales in float64, hence the comparison of levels).
        pil = reference_pixels_pil(path, size)
        np.testing.assert_array_equal(np.round(got * 255), np.round(pil * 255), err_msg=f"{name}: g3n vs PIL backend")
    record("vision", f"preprocess {size}", f"max|d|={worst * 255:.2f}/255", True, "levels = PIL backend")


def test_preprocess_jpeg_orientation(g3n, tmp_path, record):
    """EXIF orientations 1..8: g3n applies each as PIL.ImageOps.exif_transpose does (same JPEG data, so g3n's
    output for orientation o must be exactly the transposed output for orientation 1), and the decoded JPEG
    stays close to PIL's libjpeg decoding."""
    from PIL import Image

    y, x = np.mgrid[0:48, 0:80]
    a = np.stack([x * 3, y * 5, (x * y) % 256], -1).astype(np.uint8)
    base = Image.fromarray(a)
    px = {}
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        p = tmp_path / f"o{o}.jpg"
        base.save(p, quality=95, subsampling=0, exif=exif.tobytes())
        px[o] = (p, g3n_pixels(g3n, p, 96, tmp_path / f"o{o}.npy"))
    ops = {
        2: lambda m: m[:, :, ::-1],
        3: lambda m: m[:, ::-1, ::-1],
        4: lambda m: m[:, ::-1, :],
        5: lambda m: m.transpose(0, 2, 1),
        6: lambda m: m[:, ::-1, :].transpose(0, 2, 1),
        7: lambda m: m[:, ::-1, ::-1].transpose(0, 2, 1),
        8: lambda m: m[:, :, ::-1].transpose(0, 2, 1),
    }
    # Exact orientation check on a square image at its own size (no resize: transposition commutes).
    worst_pil = 0.0
    for o in range(1, 9):
        ref = reference_pixels(px[o][0], 96)
        worst_pil = max(worst_pil, float(np.abs(px[o][1] - ref).mean()))
        assert np.abs(px[o][1] - ref).mean() < 2.0 / 255, f"orientation {o}: g3n and PIL disagree on the image"
    sq = Image.fromarray(a[:, :48])
    for o in range(2, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        p1, po = tmp_path / "sq1.jpg", tmp_path / f"sq{o}.jpg"
        sq.save(p1, quality=95, subsampling=0)
        sq.save(po, quality=95, subsampling=0, exif=exif.tobytes())
        g1 = g3n_pixels(g3n, p1, 48, tmp_path / "sq1.npy")
        go = g3n_pixels(g3n, po, 48, tmp_path / f"sq{o}.npy")
        np.testing.assert_array_equal(go, np.ascontiguousarray(ops[o](g1)), err_msg=f"EXIF orientation {o}")
    record("vision", "jpeg orientation", f"mean|d| vs PIL={worst_pil * 255:.2f}/255", True)


# --------------------------------------------------------------------------------------------------------------
# (b) encoder
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def randomise_vision_(model, seed: int) -> None:
    """Every vision-tower and embed_vision parameter: convs N(0, 1/fan_in), norms 1 + 0.2 N, layer-scale
    gammas U(0.3, 1.2) (timm initialises them at 1e-5, which would hide every block's branch), biases N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "vision_tower" not in name and "embed_vision" not in name:
            continue
        if name.endswith("gamma"):
            v = 0.3 + 0.9 * torch.rand(p.shape, generator=g)
        elif p.ndim == 1 and ("bn" in name or "norm" in name):
            v = 1.0 + 0.2 * torch.randn(p.shape, generator=g)
        elif p.ndim == 1:
            v = 0.1 * torch.randn(p.shape, generator=g)
        else:
            fan_in = int(np.prod(p.shape[1:]))
            v = torch.randn(p.shape, generator=g) / math.sqrt(fan_in)
        p.copy_(v)


def build_vision_model(root: Path, arch, stem_size: int, seed: int = 0, arch_strings=True):
    from timm.models._efficientnet_builder import decode_arch_def
    from transformers import Gemma3nAudioConfig, Gemma3nConfig, Gemma3nTextConfig, Gemma3nVisionConfig

    block_args = decode_arch_def(arch) if arch_strings else arch
    kw = dict(gm.TEXT_DEFAULTS)
    kw.update(num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"],
              activation_sparsity_pattern=[0.0, 0.0])
    model_args = {"block_args": block_args}
    if stem_size:
        model_args["stem_size"] = stem_size
    vc = Gemma3nVisionConfig(model_args=model_args)  # hidden_size 2048: the fusion adapter's fixed width
    ac = Gemma3nAudioConfig(hidden_size=40, input_feat_size=16, conf_num_hidden_layers=1, conf_num_attention_heads=2,
                            sscp_conv_channel_size=[8, 8])
    model = gm.instantiate(Gemma3nConfig(text_config=Gemma3nTextConfig(**kw), vision_config=vc, audio_config=ac))
    randomise_vision_(model, seed)
    d = root / f"vision_seed{seed}"
    model.save_pretrained(d, safe_serialization=True)
    return model, d


@torch.no_grad()
def reference_soft_tokens(model, pixels: np.ndarray):
    px = torch.from_numpy(pixels)[None]
    tokens = model.model.get_image_features(px).pooler_output[0].float().numpy()
    # get_image_features scales its last_hidden_state in place (by sqrt(2048)): take the tower's output anew.
    feats = model.model.vision_tower(pixel_values=px, do_pooling=False).last_hidden_state[0].float().numpy()
    return tokens, feats


def run_encoder(g3n, model_dir: Path, pixels: np.ndarray, tmp: Path, tag: str):
    pin, out, feats = tmp / f"{tag}_px.npy", tmp / f"{tag}_tok.npy", tmp / f"{tag}_feat.npy"
    np.save(pin, np.ascontiguousarray(pixels, dtype=np.float32))
    t0 = time.perf_counter()
    p = g3n.run("encode-image", "-m", model_dir, "--pixels", pin, "--out", out, "--features-out", feats,
                "--threads", str(g3n.threads))
    dt = time.perf_counter() - t0
    check_ok(p, f"encode-image {tag}")
    return np.load(out), np.load(feats), dt


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


@pytest.fixture(scope="module")
def tiny_vision(tmp_path_factory, _torch_threads):
    _timm_or_skip()
    return build_vision_model(tmp_path_factory.mktemp("vision_models"), TINY_ARCH, stem_size=16)


# 256: the fusion adapter's input is already 16x16; 512: average pooling 32 -> 16; 384: bilinear 24 -> 16;
# 200 x 232: odd sizes everywhere (TF-'same' asymmetric padding, nearest upsampling 7 -> 13, bilinear 13 -> 16).
@pytest.mark.parametrize("hw", [(256, 256), (512, 512), (384, 384), (200, 232)])
def test_encoder_matches_reference(g3n, tiny_vision, tmp_path, record, hw):
    model, d = tiny_vision
    rng = np.random.default_rng(hw[0])
    pixels = rng.random((3, *hw), dtype=np.float32)
    ref_tok, ref_feat = reference_soft_tokens(model, pixels)
    tok, feat, dt = run_encoder(g3n, d, pixels, tmp_path, f"{hw[0]}x{hw[1]}")
    D = model.config.text_config.hidden_size
    assert tok.shape == (256, D) and feat.shape == (256, 2048)
    ref_feat = ref_feat.reshape(2048, 256).T  # [2048, 16, 16] -> tokens in raster order
    e_feat, e_tok = rel_err(feat, ref_feat), rel_err(tok, ref_tok)
    ok = e_feat <= TOL_REL and e_tok <= TOL_REL
    record("vision tiny", f"encoder {hw[0]}x{hw[1]}", f"rel feat={e_feat:.1e} tok={e_tok:.1e}", ok, f"{dt:.2f}s")
    assert ok, f"relative error: tower {e_feat:.3g}, soft tokens {e_tok:.3g} (tolerance {TOL_REL})"


def test_encoder_bf16_checkpoint(g3n, tiny_vision, tmp_path, record):
    """Released checkpoints are bfloat16: g3n reads the bf16 weights in place; the reference runs the
    bf16-rounded weights in float32."""
    model, _ = tiny_vision
    m16 = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in m16.named_parameters():
            if "vision_tower" in name or "embed_vision" in name:
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
    d16 = tmp_path / "bf16"
    b = copy.deepcopy(m16).to(torch.bfloat16)
    b.save_pretrained(d16, safe_serialization=True)
    del b
    pixels = np.random.default_rng(9).random((3, 256, 256), dtype=np.float32)
    ref_tok, _ = reference_soft_tokens(m16, pixels)
    tok, _, _ = run_encoder(g3n, d16, pixels, tmp_path, "bf16")
    e = rel_err(tok, ref_tok)
    record("vision tiny bf16", "encoder 256", f"rel tok={e:.1e}", e <= TOL_REL)
    assert e <= TOL_REL


def test_encoder_suite_arch_feature_taps(g3n, tmp_path, record, _torch_threads):
    """The parity suite's own tiny tower (gemma3n_models._tiny_vision_block_args): its stage 2 does not
    stride, so timm's feature points and forward_features' stage count disagree and the fusion adapter
    reads stages 1 and 2 (not 2 and 3). g3n must do the same."""
    _timm_or_skip()
    model, d = build_vision_model(tmp_path, gm._tiny_vision_block_args(), stem_size=8, seed=3, arch_strings=False)
    pixels = np.random.default_rng(5).random((3, 256, 256), dtype=np.float32)
    ref_tok, _ = reference_soft_tokens(model, pixels)
    tok, _, _ = run_encoder(g3n, d, pixels, tmp_path, "suite")
    e = rel_err(tok, ref_tok)
    record("vision suite-tiny", "encoder 256", f"rel tok={e:.1e}", e <= TOL_REL)
    assert e <= TOL_REL


def test_encode_image_file(g3n, tiny_vision, images, tmp_path):
    """--image: the file is preprocessed as preprocess-image does, then encoded."""
    model, d = tiny_vision
    path = images["gradient.png"]
    px = g3n_pixels(g3n, path, 256, tmp_path / "px.npy")
    out = tmp_path / "tok.npy"
    check_ok(g3n.run("encode-image", "-m", d, "--image", path, "--image-size", "256", "--out", out), "encode-image")
    ref_tok, _ = reference_soft_tokens(model, px)
    assert rel_err(np.load(out), ref_tok) <= TOL_REL


@pytest.mark.badinput
def test_encoder_shape_mismatch_names_tensor(g3n, tiny_vision, tmp_path):
    """A vision tensor of the wrong shape: the error names it and both shapes, before any computation."""
    from safetensors.torch import load_file, save_file

    _, d = tiny_vision
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in d.iterdir():
        if f.suffix != ".safetensors":
            (bad / f.name).write_bytes(f.read_bytes())
    tensors = {}
    for f in d.glob("*.safetensors"):
        tensors.update(load_file(str(f)))
    name = "model.vision_tower.timm_model.blocks.2.1.attn.key.proj.weight"
    tensors[name] = torch.zeros(7, 32, 1, 1)
    del tensors["model.vision_tower.timm_model.blocks.1.2.dw_end.bn.weight"]
    save_file(tensors, str(bad / "model.safetensors"), metadata={"format": "pt"})
    for f in d.glob("*.safetensors.index.json"):
        (bad / f.name).unlink()
    pixels = np.zeros((3, 64, 64), np.float32)
    np.save(tmp_path / "px.npy", pixels)
    p = g3n.run("encode-image", "-m", bad, "--pixels", tmp_path / "px.npy", "--out", tmp_path / "o.npy")
    assert p.returncode == 1, describe_run(p)
    assert name in p.stderr and "[7, 32, 1, 1]" in p.stderr and "[8, 32, 1, 1]" in p.stderr, p.stderr
    assert "blocks.1.2.dw_end.bn.weight" in p.stderr, p.stderr


@pytest.mark.badinput
def test_vision_config_errors(g3n, tiny_vision, tmp_path):
    """config.json drives the tower's structure: without model_args it is the real mobilenetv5_300m_enc (whose
    shapes the tiny checkpoint does not have), and unsupported block args are named."""
    import json

    _, d = tiny_vision
    np.save(tmp_path / "px.npy", np.zeros((3, 64, 64), np.float32))
    cfg = json.loads((d / "config.json").read_text())

    def run_with(vision_config):
        m = tmp_path / "m"
        m.mkdir(exist_ok=True)
        for f in d.iterdir():
            if f.name != "config.json":
                (m / f.name).unlink(missing_ok=True)
                (m / f.name).symlink_to(f)
        c = copy.deepcopy(cfg)
        c["vision_config"] = vision_config
        (m / "config.json").write_text(json.dumps(c))
        p = g3n.run("encode-image", "-m", m, "--pixels", tmp_path / "px.npy", "--out", tmp_path / "o.npy")
        assert p.returncode == 1, describe_run(p)
        return p.stderr

    vc = copy.deepcopy(cfg["vision_config"])
    vc["model_args"] = None
    err = run_with(vc)
    assert "model.vision_tower.timm_model.conv_stem.conv.weight has shape [16, 3, 3, 3], expected [64, 3, 3, 3]" in err, err
    vc = copy.deepcopy(cfg["vision_config"])
    vc["model_args"]["block_args"][1][0]["se_ratio"] = 0.25
    assert "block_args[1][0].se_ratio" in run_with(vc)
    vc = copy.deepcopy(cfg["vision_config"])
    vc["model_args"]["block_args"][0][0]["block_type"] = "cn"
    assert "'cn' is not supported" in run_with(vc)
    vc = copy.deepcopy(cfg["vision_config"])
    vc["model_args"]["block_args"][2] = ["uir_r1_a5_k5_s2_e2_c32", "mqa_r1_k3_h2_v2_s1_d8_c32", "zz_r1_c8"]
    assert "'zz_r1_c8'" in run_with(vc)
    vc = copy.deepcopy(cfg["vision_config"])
    vc["architecture"] = "mobilenetv5_base"
    assert "mobilenetv5_base" in run_with(vc)


@pytest.fixture(scope="module")
def full_vision(tmp_path_factory, _torch_threads):
    """The real mobilenetv5_300m_enc (294M random parameters, saved as bfloat16 like the released checkpoints);
    the float32 reference runs the same bf16-rounded weights. G3N_TEST_VISION_FULL=0 skips it."""
    if os.environ.get("G3N_TEST_VISION_FULL", "1") in ("0", "false", "no"):
        pytest.skip("G3N_TEST_VISION_FULL=0: real-shape MobileNet-V5 skipped")
    _timm_or_skip()
    from transformers import Gemma3nAudioConfig, Gemma3nConfig, Gemma3nTextConfig, Gemma3nVisionConfig

    kw = dict(gm.TEXT_DEFAULTS)
    kw.update(num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"],
              activation_sparsity_pattern=[0.0, 0.0])
    ac = Gemma3nAudioConfig(hidden_size=40, input_feat_size=16, conf_num_hidden_layers=1, conf_num_attention_heads=2,
                            sscp_conv_channel_size=[8, 8])
    t0 = time.perf_counter()
    model = gm.instantiate(Gemma3nConfig(text_config=Gemma3nTextConfig(**kw), vision_config=Gemma3nVisionConfig(),
                                         audio_config=ac))
    randomise_vision_(model, 1)
    d = tmp_path_factory.mktemp("vision_full") / "full"
    model.to(torch.bfloat16)  # in place
    model.save_pretrained(d, safe_serialization=True)
    model.float()
    yield model, d, time.perf_counter() - t0
    shutil.rmtree(d, ignore_errors=True)  # ~0.6 GB


# 256 px always (~20 s in all, building the model dominates); 512 and 768 with G3N_TEST_VISION_FULL=all.
@pytest.mark.parametrize("size", [256, 512, 768])
def test_encoder_full_size(g3n, full_vision, tmp_path, record, size):
    if size != 256 and os.environ.get("G3N_TEST_VISION_FULL", "1") != "all":
        pytest.skip("G3N_TEST_VISION_FULL=all runs the real-shape tower at 512 and 768 px too")
    model, d, build = full_vision
    pixels = np.random.default_rng(size).random((3, size, size), dtype=np.float32)
    t0 = time.perf_counter()
    ref_tok, _ = reference_soft_tokens(model, pixels)
    t_ref = time.perf_counter() - t0
    tok, _, dt = run_encoder(g3n, d, pixels, tmp_path, f"full{size}")
    e = rel_err(tok, ref_tok)
    record("vision 300m bf16", f"encoder {size}", f"rel tok={e:.1e}", e <= TOL_REL,
           f"g3n {dt:.1f}s ref {t_ref:.1f}s build {build:.0f}s")
    assert e <= TOL_REL


# --------------------------------------------------------------------------------------------------------------
# (c) bad files
# --------------------------------------------------------------------------------------------------------------


def _png_header_only(w: int, h: int) -> bytes:
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bad_files(d: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a word the error must contain)"""
    from PIL import Image

    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    png = buf.getvalue()
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    jpg = buf.getvalue()
    buf = io.BytesIO()
    img.convert("CMYK").save(buf, "JPEG")
    cmyk = buf.getvalue()
    files = {
        "empty.png": (b"", "empty"),
        "truncated.png": (png[: len(png) // 2], "PNG"),
        "truncated_header.png": (png[:20], "PNG"),
        "truncated.jpg": (jpg[: len(jpg) // 2], "truncated"),
        "header_only.jpg": (jpg[:200], "JPEG"),
        "huge.png": (_png_header_only(65535, 65535), "limit"),
        "text.jpg": (b"hello, this is not an image at all\n" * 3, "not a JPEG"),
        "cmyk.jpg": (cmyk, "CMYK"),
        "garbage_after_magic.png": (b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 500, dtype=np.uint8)), "PNG"),
        "truncated.bmp": (b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 100, 100, 1, 24, 0, 0, 0, 0, 0, 0) + b"\x00" * 100, "BMP"),
        "huge.gif": (b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00" + b",\x00\x00\x00\x00" + struct.pack("<HH", 65535, 65535) + b"\x00\x02\x02D\x01\x00;", "limit"),
    }
    out = {}
    for name, (data, word) in files.items():
        p = d / name
        p.write_bytes(data)
        out[name] = (p, word)
    return out


@pytest.mark.badinput
def test_bad_image_files(g3n, tmp_path):
    for name, (path, word) in bad_files(tmp_path).items():
        p = g3n.run("preprocess-image", "--image", path, "--out", tmp_path / "o.npy", timeout=30)
        assert p.returncode == 1, f"{name}: expected a clean error\n{describe_run(p)}"
        assert "g3n: error:" in p.stderr and word.lower() in p.stderr.lower(), f"{name}: {p.stderr}"
        assert str(path) in p.stderr, f"{name}: the error should name the file: {p.stderr}"


@pytest.mark.badinput
def test_missing_image_file(g3n, tmp_path):
    p = g3n.run("preprocess-image", "--image", tmp_path / "nope.png", "--out", tmp_path / "o.npy")
    assert p.returncode == 1 and "nope.png" in p.stderr, describe_run(p)


@pytest.mark.badinput
def test_truncations_never_crash(g3n, tmp_path):
    """Every prefix length class of a PNG / JPEG / GIF / BMP: an image or a clean error, never a signal."""
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif"), ("BMP", "bmp")):
        buf = io.BytesIO()
        img.save(buf, fmt)
        data = buf.getvalue()
        for cut in sorted({1, 2, 7, 8, 16, 33, len(data) // 3, len(data) // 2, len(data) - 1}):
            p = tmp_path / f"cut{cut}.{ext}"
            p.write_bytes(data[:cut])
            r = g3n.run("preprocess-image", "--image", p, "--image-size", "32", "--out", tmp_path / "o.npy", timeout=30)
            assert r.returncode in (0, 1), f"{fmt} cut at {cut}: {describe_run(r)}"
            if r.returncode == 1:
                assert "g3n: error:" in r.stderr
