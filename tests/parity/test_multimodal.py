"""End to end: images and audio through the decoder, g3n vs transformers' Gemma3nForConditionalGeneration.

A small random Gemma3nForConditionalGeneration with a reduced MobileNet-V5 (timm block args, every block kind)
and a reduced USM audio tower (every audio parameter randomised), saved with save_pretrained. The prompt
holds <image_soft_token> / <audio_soft_token> runs exactly as Gemma3nProcessor expands them; g3n gets the
image and audio *files* (`--image`, `--audio`: decoding, preprocessing, feature extraction, encoders,
embedders, placement) and the reference gets what its processor makes of the same files:
  - pixels: 256 x 256 PNGs at --image-size 256 (the resize is then the identity on both sides);
  - audio: float32 16 kHz WAVs, features from Gemma3nAudioFeatureExtractor with a float64 FFT (see
    test_audio.py: NumPy 2 computes the reference's FFT in float32 for float32 input).
Compared: logits of every position (max |diff| <= 1e-3) and greedy continuations (identical).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import gemma3n_models as gm
from g3n_harness import check_ok

TOL_LOGITS = 1e-3
N_GREEDY = 8

# Small vocabulary with the multimodal ranges moved down (vision ids 256.., audio ids 384..), as test_audio.py.
TEXT = dict(vocab_size=512, vocab_size_per_layer_input=256, num_hidden_layers=4,
            layer_types=[gm.S, gm.F, gm.S, gm.F], num_kv_shared_layers=2, hidden_size=64, intermediate_size=128,
            activation_sparsity_pattern=[0.95, 0.0, 0.0, 0.0], sliding_window=64)
TOKENS = dict(boi_token_id=250, eoi_token_id=256, image_token_id=257, boa_token_id=251, eoa_token_id=384,
              audio_token_id=385)
IMAGE_TOKENS, AUDIO_TOKENS = 256, 188


@torch.no_grad()
def _randomise_audio_(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "audio_tower" not in name:
            continue
        if name.endswith("per_dim_scale"):
            v = 0.5 * torch.randn(p.shape, generator=g)
        elif p.ndim == 1:
            v = 1.0 + 0.2 * torch.randn(p.shape, generator=g)
        else:
            v = torch.randn(p.shape, generator=g) / math.sqrt(int(np.prod(p.shape[1:])))
        p.copy_(v)


@torch.no_grad()
def _randomise_vision_(model, seed: int) -> None:
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
            v = torch.randn(p.shape, generator=g) / math.sqrt(int(np.prod(p.shape[1:])))
        p.copy_(v)


class MultimodalCase:
    def __init__(self, root: Path):
        from transformers import Gemma3nAudioConfig, Gemma3nConfig, Gemma3nTextConfig, Gemma3nVisionConfig

        spec = gm.ModelSpec(name="mm", seed=0, text=TEXT, prompts=(), multimodal=True)
        tc = Gemma3nTextConfig(**gm.text_config_kwargs(spec))
        vc = Gemma3nVisionConfig(model_args={"block_args": gm._tiny_vision_block_args(), "stem_size": 8},
                                 vocab_offset=256)
        ac = Gemma3nAudioConfig(vocab_offset=384, hidden_size=64, conf_num_attention_heads=4,
                                conf_num_hidden_layers=2, sscp_conv_channel_size=[16, 8])
        cfg = Gemma3nConfig(text_config=tc, vision_config=vc, audio_config=ac, **TOKENS)
        torch.manual_seed(0)
        self.model = gm.instantiate(cfg)
        gm.randomise_(self.model, 77)
        _randomise_vision_(self.model, 78)
        _randomise_audio_(self.model, 79)
        self.model.eval()
        self.dir = root / "mm"
        self.model.save_pretrained(self.dir, safe_serialization=True)

    @torch.no_grad()
    def inputs(self, ids, images, audios):
        kw = {"input_ids": torch.tensor([ids])}
        if images:
            kw["pixel_values"] = torch.from_numpy(np.stack([reference_pixels(p) for p in images]))
        if audios:
            feats, masks = zip(*(reference_features(p) for p in audios))
            n = max(f.shape[0] for f in feats)
            f = np.zeros((len(feats), n, feats[0].shape[1]), np.float32)
            m = np.zeros((len(feats), n), bool)
            for i, (a, b) in enumerate(zip(feats, masks)):
                f[i, : a.shape[0]], m[i, : b.shape[0]] = a, b
            kw["input_features"], kw["input_features_mask"] = torch.from_numpy(f), torch.from_numpy(m)
        return kw

    @torch.no_grad()
    def logits(self, ids, images=(), audios=()) -> np.ndarray:
        return self.model(**self.inputs(ids, images, audios), use_cache=False).logits[0].double().numpy()

    @torch.no_grad()
    def greedy(self, ids, images=(), audios=(), n=N_GREEDY) -> list[int]:
        out = self.model.generate(**self.inputs(ids, images, audios), max_new_tokens=n, do_sample=False,
                                  min_new_tokens=n, pad_token_id=0, eos_token_id=None)
        return out[0, len(ids):].tolist()


def reference_pixels(path: Path) -> np.ndarray:
    """The processor at 256 on a 256 x 256 image: the resize is the identity, so pixels = u8 / 255 (float32)."""
    from PIL import Image

    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) * np.float32(1 / 255)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def reference_features(path: Path):
    from transformers import Gemma3nAudioFeatureExtractor

    from test_audio import float64_rfft, read_wav

    rate, x = read_wav(path)
    assert rate == 16000
    x = x[:, 0]
    with float64_rfft():
        out = Gemma3nAudioFeatureExtractor()(x, return_tensors="np", padding="longest")
    return out["input_features"][0].astype(np.float32), out["input_features_mask"][0].astype(bool)


def write_png(path: Path, seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256]
    img = np.stack([(xx + yy) % 256, (3 * xx) % 256, rng.integers(0, 256, (256, 256))], -1).astype(np.uint8)
    Image.fromarray(img).save(path)
    return path


def write_wav(path: Path, seconds: float, seed: int) -> Path:
    from test_audio import write_wav_f32

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    x = 0.3 * np.sin(2 * np.pi * (200 + 600 * t) * t) + 0.05 * rng.standard_normal(t.size)
    return write_wav_f32(path, x.astype(np.float32), 16000)


def image_run() -> list[int]:
    return [TOKENS["boi_token_id"]] + [TOKENS["image_token_id"]] * IMAGE_TOKENS + [TOKENS["eoi_token_id"]]


def audio_run() -> list[int]:
    return [TOKENS["boa_token_id"]] + [TOKENS["audio_token_id"]] * AUDIO_TOKENS + [TOKENS["eoa_token_id"]]


@pytest.fixture(scope="module")
def mm(tmp_path_factory, _torch_threads):
    if not gm.timm_usable():
        pytest.skip("timm is not importable: no MobileNet-V5 reference")
    return MultimodalCase(tmp_path_factory.mktemp("multimodal"))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("mm_media")
    return {
        "img_a": write_png(d / "a.png", 1),
        "img_b": write_png(d / "b.png", 2),
        "clip_7s": write_wav(d / "clip7.wav", 7.3, 3),
        "clip_1s": write_wav(d / "clip1.wav", 1.0, 4),
    }


def media_args(images, audios) -> list:
    args = []
    for p in images:
        args += ["--image", p]
    for p in audios:
        args += ["--audio", p]
    return args + (["--image-size", "256"] if images else [])


CASES = {
    # a chat turn: <bos><start_of_turn>user\n [image] text [audio] text <end_of_turn>\n<start_of_turn>model\n
    "image+audio": (lambda: [2, 105, 30, 31] + image_run() + [40, 41] + audio_run() + [42, 106, 107, 105, 50, 51],
                    ["img_a"], ["clip_7s"]),
    "two images": (lambda: [2, 105, 30] + image_run() + [33] + image_run() + [34, 106, 105, 50], ["img_a", "img_b"], []),
    "short clip (padded tokens)": (lambda: [2, 105, 30] + audio_run() + [35, 36, 106, 105, 50], [], ["clip_1s"]),
    "audio then image": (lambda: [2, 105] + audio_run() + [37] + image_run() + [38, 106, 105, 50], ["img_b"], ["clip_1s"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_the_reference(g3n, mm, media, tmp_path, record, case):
    make_ids, images, audios = CASES[case]
    ids = make_ids()
    images = [media[k] for k in images]
    audios = [media[k] for k in audios]
    ref = mm.logits(ids, images, audios)
    out = tmp_path / "logits.npy"
    p = g3n.run("score", "-m", mm.dir, "--ids", ",".join(map(str, ids)), "--out", out, *media_args(images, audios))
    check_ok(p, f"score {case}")
    got = np.load(out).astype(np.float64)
    assert got.shape == ref.shape
    err = float(np.abs(got - ref).max())
    top1 = float((got.argmax(-1) == ref.argmax(-1)).mean())
    # The media matter: without them (placeholders embedded as plain ids) the logits move far beyond the tolerance.
    assert np.abs(mm.logits(ids) - ref).max() > 100 * TOL_LOGITS
    ok = err <= TOL_LOGITS and top1 == 1.0
    record("multimodal", f"logits {case} ({len(ids)} positions)", f"max|d|={err:.1e} top1={top1:.3f}", ok)
    assert ok, f"{case}: max |diff| {err:.3g} (tolerance {TOL_LOGITS}), top-1 agreement {top1}"


@pytest.mark.parametrize("case", ["image+audio", "two images"])
def test_greedy_matches_the_reference(g3n, mm, media, record, case):
    make_ids, images, audios = CASES[case]
    ids = make_ids()
    images = [media[k] for k in images]
    audios = [media[k] for k in audios]
    ref = mm.greedy(ids, images, audios)
    p = g3n.run("generate", "-m", mm.dir, "--ids", ",".join(map(str, ids)), "-n", str(N_GREEDY),
                *media_args(images, audios))
    check_ok(p, f"generate {case}")
    got = [int(t) for t in p.stdout.split()]
    record("multimodal", f"greedy {case}", f"{N_GREEDY} tokens {'equal' if got == ref else 'DIFFER'}", got == ref)
    assert got == ref, f"g3n {got} vs reference {ref}"


def test_plain_and_chunked_paths_agree(g3n, mm, media, tmp_path):
    """The exact shortcuts (prefill skipping KV-shared layers, sparse FFN) and chunked prefill, with media."""
    make_ids, images, audios = CASES["image+audio"]
    ids = ",".join(map(str, make_ids()))
    args = media_args([media[k] for k in images], [media[k] for k in audios])
    outs = []
    for extra in ([], ["--plain"], ["--chunk", "37"]):
        out = tmp_path / f"l{len(outs)}.npy"
        check_ok(g3n.run("score", "-m", mm.dir, "--ids", ids, "--out", out, *args, *extra), f"score {extra}")
        outs.append(np.load(out))
    assert np.abs(outs[0] - outs[1]).max() < 1e-4
    assert np.abs(outs[0] - outs[2]).max() < 1e-4


@pytest.mark.badinput
def test_placeholder_count_mismatch_is_an_error(g3n, mm, media, tmp_path):
    ids = [2, 105] + image_run()[:-10] + [106]
    p = g3n.run("score", "-m", mm.dir, "--ids", ",".join(map(str, ids)), "--out", tmp_path / "x.npy",
                *media_args([media["img_a"]], []))
    assert p.returncode == 1, p.stderr
    assert "image soft-token positions" in p.stderr and "1 image with 256 soft tokens" in p.stderr, p.stderr
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.badinput
def test_media_on_a_text_only_model_is_an_error(g3n, tmp_path, media):
    d = tmp_path / "tiny"
    check_ok(g3n.run("make-random", "--preset", "tiny", "--modalities", "text", "--out", d), "make-random")
    p = g3n.run("score", "-m", d, "--ids", "2,105", "--out", tmp_path / "x.npy", "--image", media["img_a"])
    assert p.returncode == 1 and "has no vision tower" in p.stderr, p.stderr
    p = g3n.run("score", "-m", d, "--ids", "2,105", "--out", tmp_path / "x.npy", "--audio", media["clip_1s"])
    assert p.returncode == 1 and "has no audio tower" in p.stderr, p.stderr


@pytest.mark.badinput
def test_bad_media_files_are_errors(g3n, mm, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    ids = ",".join(map(str, [2] + image_run()))
    p = g3n.run("score", "-m", mm.dir, "--ids", ids, "--out", tmp_path / "x.npy", "--image", bad)
    assert p.returncode == 1 and "bad.png" in p.stderr, p.stderr
    wav = tmp_path / "bad.wav"
    wav.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt ")
    p = g3n.run("score", "-m", mm.dir, "--ids", ",".join(map(str, [2] + audio_run())), "--out", tmp_path / "y.npy",
                "--audio", wav)
    assert p.returncode == 1 and "bad.wav" in p.stderr, p.stderr


# --------------------------------------------------------------------------------------------------------------
# `g3n make-random --preset tiny`: the no-download checkpoint carries reduced vision and audio towers in the
# released layout; transformers loads it and agrees with g3n on an image + audio prompt. Then the CLI on it.
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_mm(g3n, tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_mm") / "tiny"
    check_ok(g3n.run("make-random", "--preset", "tiny", "--dtype", "f32", "--seed", "9", "--out", d), "make-random")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_make_random_towers_load_in_transformers(g3n, tiny_mm, media, tmp_path, record, _torch_threads):
    if not gm.timm_usable():
        pytest.skip("timm is not importable")
    from transformers import Gemma3nForConditionalGeneration

    model = Gemma3nForConditionalGeneration.from_pretrained(tiny_mm, dtype=torch.float32).eval()
    c = model.config
    ids = ([2, 105, 2364, 107, c.boi_token_id] + [c.image_token_id] * IMAGE_TOKENS + [c.eoi_token_id, 1437,
           c.boa_token_id] + [c.audio_token_id] * AUDIO_TOKENS + [c.eoa_token_id, 106, 107, 105, 4368, 107])
    kw = {"input_ids": torch.tensor([ids]), "pixel_values": torch.from_numpy(reference_pixels(media["img_a"]))[None]}
    f, m = reference_features(media["clip_7s"])
    kw["input_features"], kw["input_features_mask"] = torch.from_numpy(f)[None], torch.from_numpy(m)[None]
    with torch.no_grad():
        ref = model(**kw, use_cache=False).logits[0].double().numpy()
    out = tmp_path / "l.npy"
    check_ok(g3n.run("score", "-m", tiny_mm, "--ids", ",".join(map(str, ids)), "--out", out,
                     *media_args([media["img_a"]], [media["clip_7s"]])), "score")
    got = np.load(out).astype(np.float64)
    err = float(np.abs(got - ref).max())
    record("multimodal", "make-random tiny towers vs transformers", f"max|d|={err:.1e}", err <= TOL_LOGITS)
    assert err <= TOL_LOGITS


def test_run_with_image_and_audio(g3n, tiny_mm, media):
    p = g3n.run("run", "-m", tiny_mm, "--image", media["img_a"], "--audio", media["clip_1s"], "Describe both.",
                "-n", "6", "--temperature", "0", "-v")
    check_ok(p, "run --image --audio")
    assert "256 soft tokens" in p.stderr and "audio tokens" in p.stderr, p.stderr
    # The same prompt through generate --prompt --chat: the same first greedy token as run's text.
    g = g3n.run("generate", "-m", tiny_mm, "--prompt", "Describe both.", "--chat", "--image", media["img_a"],
                "--audio", media["clip_1s"], "-n", "1")
    check_ok(g, "generate --chat")


def test_chat_attaches_media_and_reuses_the_cache(g3n, tiny_mm, media):
    script = f"/image {media['img_a']}\nWhat is this?\nAnd now?\n/exit\n"
    p = g3n.run("chat", "-m", tiny_mm, "-n", "3", "--temperature", "0", "-v", input=script)
    check_ok(p, "chat /image")
    assert "attached to your next message" in p.stderr
    reused = [int(x.split("(")[1].split()[0]) for x in p.stderr.splitlines() if "reused from the cache" in x]
    assert len(reused) == 2 and reused[0] == 0 and reused[1] > IMAGE_TOKENS, p.stderr


def test_transcribe_long_audio_in_windows(g3n, tiny_mm, tmp_path):
    from test_audio import write_wav_f32

    rng = np.random.default_rng(5)
    x = 0.2 * rng.standard_normal(16000 * 70).astype(np.float32)
    for a, b in [(23.0, 23.4), (47.5, 47.9)]:
        x[int(a * 16000): int(b * 16000)] *= 1e-3
    wav = write_wav_f32(tmp_path / "long.wav", x, 16000)
    p = g3n.run("transcribe", "-m", tiny_mm, wav, "-n", "3", "-v")
    check_ok(p, "transcribe")
    clips = [ln for ln in p.stderr.splitlines() if "] clip " in ln and "/3:" in ln]
    assert len(clips) == 3, p.stderr
    assert "[0.00 s - 23." in clips[0] and "[23." in clips[1] and " - 47." in clips[1], clips
    p = g3n.run("transcribe", "-m", tiny_mm, wav, "--max-audio-seconds", "60")
    assert p.returncode == 1 and "longer than the limit of 60 s" in p.stderr, p.stderr
    p = g3n.run("transcribe", "-m", tiny_mm, wav, "--translate-to", "French", "--translation-only", "-n", "2")
    check_ok(p, "transcribe --translate-to")


def test_matformer_profile_with_image_and_audio(g3n, tiny_mm, media, tmp_path):
    """A run-time profile with media equals the same profile exported by `g3n slice` (towers carried over), and
    differs from the whole model."""
    profile = "skip=4;ffn=128"
    sliced = tmp_path / "sliced"
    check_ok(g3n.run("slice", "-m", tiny_mm, "--profile", profile, "--out", sliced), "slice")
    args = ["--prompt", "Look <image_soft_token> and listen <audio_soft_token>", "--chat",
            *media_args([media["img_b"]], [media["clip_1s"]])]
    outs = {}
    for name, extra in {"runtime": ["-m", tiny_mm, "--profile", profile], "sliced": ["-m", sliced],
                        "full": ["-m", tiny_mm]}.items():
        out = tmp_path / f"{name}.npy"
        check_ok(g3n.run("score", *extra, *args, "--out", out), f"score {name}")
        outs[name] = np.load(out)
    assert outs["runtime"].shape[0] > IMAGE_TOKENS + AUDIO_TOKENS
    assert np.abs(outs["runtime"] - outs["sliced"]).max() <= 1e-5
    assert np.abs(outs["runtime"] - outs["full"]).max() > 1e-2


def test_gguf_text_model_with_mmproj(g3n, tiny_mm, media, tmp_path, record, _torch_threads):
    """The llama.cpp way: a text GGUF (`g3n quantize`) and an mmproj GGUF with the towers (llama.cpp's converter
    layout, test_gguf_mmproj.write_mmproj), both F32: `score --mmproj` equals the checkpoint directory, with an
    image and a clip in the prompt."""
    from transformers import Gemma3nForConditionalGeneration

    from test_gguf_mmproj import write_mmproj

    text = tmp_path / "text.gguf"
    check_ok(g3n.run("quantize", "-m", tiny_mm, "--type", "f32", "--text-only", "--out", text), "quantize")
    model = Gemma3nForConditionalGeneration.from_pretrained(tiny_mm, dtype=torch.float32)
    mm = write_mmproj(model, tmp_path / "mmproj.gguf", outtype="all-f32")
    args = ["--prompt", "Look <image_soft_token> listen <audio_soft_token> and answer", "--chat",
            *media_args([media["img_a"]], [media["clip_1s"]])]
    a, b = tmp_path / "dir.npy", tmp_path / "gguf.npy"
    check_ok(g3n.run("score", "-m", tiny_mm, *args, "--out", a), "score dir")
    check_ok(g3n.run("score", "-m", text, "--mmproj", mm, *args, "--out", b), "score gguf + mmproj")
    la, lb = np.load(a), np.load(b)
    err = float(np.abs(la - lb).max())
    top1 = float((la.argmax(-1) == lb.argmax(-1)).mean())
    record("multimodal", "text GGUF + mmproj (F32) vs directory", f"max|d|={err:.1e} top1={top1:.3f}", err <= 1e-4)
    assert la.shape == lb.shape and err <= 1e-4 and top1 == 1.0, (err, top1)
    # Without the mmproj the GGUF has no towers: a clear error.
    p = g3n.run("score", "-m", text, *args, "--out", tmp_path / "x.npy")
    assert p.returncode == 1 and "has no vision tower" in p.stderr, p.stderr


def test_video_frames_go_in_as_images(g3n, tiny_mm, tmp_path):
    """`--video` = its sampled frames given as `--image` files, in order (`g3n video-frames` writes the very
    frames as PNGs): the logits are identical."""
    pytest.importorskip("av")
    from test_video import make_video

    clip = make_video(tmp_path / "clip.mkv", "mpeg4", fmt="matroska", frames=72, rate=24, w=96, h=64)
    frames_dir = tmp_path / "frames"
    check_ok(g3n.run("video-frames", "--video", clip, "--fps", "1", "--out", frames_dir), "video-frames")
    pngs = sorted(frames_dir.glob("frame_*.png"))
    assert len(pngs) == 3
    prompt = ["--prompt", "What happens in this video?", "--chat", "--image-size", "256"]
    a, b = tmp_path / "video.npy", tmp_path / "images.npy"
    p = g3n.run("score", "-m", tiny_mm, *prompt, "--video", clip, "--fps", "1", "--out", a)
    check_ok(p, "score --video")
    images = [x for png in pngs for x in ("--image", png)]
    check_ok(g3n.run("score", "-m", tiny_mm, *prompt, *images, "--out", b), "score --image frames")
    la, lb = np.load(a), np.load(b)
    assert la.shape == lb.shape and la.shape[0] > 3 * IMAGE_TOKENS
    assert np.array_equal(la, lb)
    p = g3n.run("run", "-m", tiny_mm, "--video", clip, "--max-frames", "2", "Describe.", "-n", "2", "-v")
    check_ok(p, "run --video")
    assert "-> 2 frames" in p.stderr, p.stderr


def test_quantize_one_file_with_every_modality(g3n, tiny_mm, media, tmp_path):
    """`g3n quantize` keeps the towers: in the same GGUF by default (one file with every modality), or in a
    separate llama.cpp-layout mmproj with --mmproj-out. At F32 both equal the checkpoint directory; at Q8_0 the
    one file still runs images and audio with mostly the same greedy choices."""
    one, text, mm = tmp_path / "one.gguf", tmp_path / "text.gguf", tmp_path / "text.mmproj.gguf"
    check_ok(g3n.run("quantize", "-m", tiny_mm, "--type", "f32", "--out", one), "quantize one file")
    check_ok(g3n.run("quantize", "-m", tiny_mm, "--type", "f32", "--out", text, "--mmproj-out", mm), "quantize pair")
    q8 = tmp_path / "q8.gguf"
    check_ok(g3n.run("quantize", "-m", tiny_mm, "--type", "q8", "--out", q8), "quantize q8")
    args = ["--prompt", "See <image_soft_token> hear <audio_soft_token>", "--chat",
            *media_args([media["img_b"]], [media["clip_7s"]])]
    out = {}
    for name, m in {"dir": ["-m", tiny_mm], "one": ["-m", one], "pair": ["-m", text, "--mmproj", mm],
                    "q8": ["-m", q8]}.items():
        check_ok(g3n.run("score", *m, *args, "--out", tmp_path / f"{name}.npy"), f"score {name}")
        out[name] = np.load(tmp_path / f"{name}.npy")
    assert np.array_equal(out["one"], out["pair"])
    assert np.abs(out["one"] - out["dir"]).max() <= 1e-4
    # (random logits are near-ties everywhere: Q8_0 keeps ~90% of the greedy choices of this tiny model)
    assert (out["q8"].argmax(-1) == out["dir"].argmax(-1)).mean() >= 0.8
    p = g3n.run("quantize", "-m", tiny_mm, "--type", "q8", "--out", tmp_path / "t.gguf", "--text-only")
    check_ok(p, "quantize --text-only")
    p = g3n.run("score", "-m", tmp_path / "t.gguf", *args, "--out", tmp_path / "x.npy")
    assert p.returncode == 1 and "has no vision tower" in p.stderr, p.stderr
