"""WebP images: g3n's decoder (libwebp, src/media/image.cpp) against PIL's (also libwebp), through
`g3n preprocess-image` at the image's own size (square images: the resize is the identity, so the pixel
tensor is the decoded RGB / 255). Lossless, lossy and lossy-with-alpha files written here with PIL; alpha is
composited on white as transformers' convert_to_rgb does (PIL.Image.alpha_composite). Expected: the same
8-bit values (|difference| < 0.5 / 255). Bad WebP files (marker badinput): clean errors.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from g3n_harness import check_ok, describe_run

PIL = pytest.importorskip("PIL")
from PIL import Image, features  # noqa: E402

if not features.check("webp"):
    pytest.skip("this Pillow has no WebP support", allow_module_level=True)

N = 48


def _rgba() -> np.ndarray:
    y, x = np.mgrid[0:N, 0:N]
    a = np.stack([(x * 5) % 256, (y * 5) % 256, ((x + y) * 3) % 256, (x * 11 + y * 7) % 256], -1)
    a[:4, :4, 3] = 0
    a[-4:, -4:, 3] = 255
    return a.astype(np.uint8)


def _reference(path: Path) -> np.ndarray:
    im = Image.open(path)
    if im.mode in ("RGBA", "LA") or "transparency" in im.info:
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA"))
    return np.asarray(im.convert("RGB"))


def _g3n_rgb(g3n, path: Path, tmp_path: Path) -> np.ndarray:
    out = tmp_path / "px.npy"
    check_ok(g3n.run("preprocess-image", "--image", path, "--image-size", str(N), "--out", out), f"preprocess {path}")
    px = np.load(out)  # [3, N, N] float32, u8 / 255
    return np.rint(px.transpose(1, 2, 0) * 255).astype(np.int16)


@pytest.mark.parametrize("kind", ["lossless_rgb", "lossless_rgba", "lossy_rgb", "lossy_rgba"])
def test_webp_matches_pil(g3n, tmp_path, kind):
    rgba = _rgba()
    im = Image.fromarray(rgba, "RGBA") if kind.endswith("rgba") else Image.fromarray(rgba[..., :3], "RGB")
    path = tmp_path / f"{kind}.webp"
    im.save(path, "WEBP", lossless=kind.startswith("lossless"), quality=85)
    got = _g3n_rgb(g3n, path, tmp_path)
    want = _reference(path).astype(np.int16)
    assert got.shape == want.shape
    diff = int(np.abs(got - want).max())
    assert diff == 0, f"{kind}: max |g3n - PIL| = {diff} levels"
    if kind == "lossless_rgb":
        assert np.array_equal(got, rgba[..., :3])


@pytest.mark.badinput
def test_bad_webp_files(g3n, tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_rgba()).save(buf, "WEBP", quality=80)
    webp = buf.getvalue()
    frames = [Image.fromarray(np.full((16, 16, 3), v, np.uint8)) for v in (0, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0)
    animated = buf.getvalue()
    files = {
        "empty.webp": (b"", "empty"),
        "header.webp": (webp[:20], "truncated"),
        "half.webp": (webp[: len(webp) // 2], "WebP"),
        "animated.webp": (animated, "animated"),
        "wave.webp": (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(20), "not WebP"),
    }
    for name, (data, word) in files.items():
        p = tmp_path / name
        p.write_bytes(data)
        r = g3n.run("preprocess-image", "--image", p, "--out", tmp_path / "o.npy", timeout=30)
        assert r.returncode == 1, f"{name}: expected a clean error\n{describe_run(r)}"
        assert word.lower() in r.stderr.lower() and str(p) in r.stderr, f"{name}: {r.stderr}"
    for cut in range(1, len(webp), max(1, len(webp) // 40)):
        p = tmp_path / f"cut{cut}.webp"
        p.write_bytes(webp[:cut])
        r = g3n.run("preprocess-image", "--image", p, "--image-size", "16", "--out", tmp_path / "o.npy", timeout=30)
        assert r.returncode == 1 and "g3n: error:" in r.stderr, f"cut at {cut}: {describe_run(r)}"
