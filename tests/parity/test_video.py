"""Video as frames: `g3n video-frames` (src/media/video.cpp, FFmpeg's libraries from Debian) vs PyAV.

Videos are made here with PyAV (its bundled FFmpeg's encoders): H.264 in MP4 and Matroska (4:2:0 with
B-frames, 4:4:4, 4:2:2), VP9 in WebM, MJPEG (full range) in AVI, MPEG-4 part 2 in Matroska, odd sizes, MP4s
whose track matrix rotates the picture by 90 / 180 / 270 degrees, and a 30 s video with a 2 s GOP that
g3n samples sparsely (the seek path). Each video is decoded whole by PyAV; the reference picks, for each
target time, the nearest frame exactly as video.h documents:
    t_k = k / fps while t_k < duration; more than max_frames of them: t_k = k * duration / max_frames;
    nearest presentation time, ties to the earlier frame; a frame taken twice is returned once.
g3n's timestamps must name the same frames, and its pixels equal PyAV's frame.to_ndarray(format="rgb24")
(rotated by the frame's display rotation) within TOL_LEVELS: both convert with libswscale's bilinear
setting, Debian's FFmpeg 5.1 against PyAV's bundled one; 8-bit video agrees exactly in practice.
Two cases where the two libswscale versions take different conversion paths are checked on average only
(test_odd_height_420): 4:2:0 video of odd height (the chroma of the last rows; up to ~80 levels at sharp
colour edges, ~1 level on average), and high-bit-depth video (dithering to 8 bits; left out).

Bad inputs (marker badinput): empty, text, truncated (MP4 without its index, MP4 / WebM / AVI cut in the
data), an image and an HLS playlist named .mp4, audio only, zero frames, a frame above --max-pixels,
and random damage: a clean error that names the file, never a crash.
"""

from __future__ import annotations

import json
import math
import random
import struct
from pathlib import Path

import numpy as np
import pytest

from g3n_harness import check_ok, describe_run

av = pytest.importorskip("av")

TOL_LEVELS = 2  # max |g3n - PyAV| per 8-bit channel value


# --------------------------------------------------------------------------------------------------------------
# Making videos
# --------------------------------------------------------------------------------------------------------------


def _picture(i: int, w: int, h: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 4 + i * 5) % 256, (y * 5 + i * 3) % 256, ((x + y) * 2 + i * 7) % 256], -1).astype(np.uint8)


def make_video(path: Path, codec: str, *, fmt: str | None = None, frames: int = 48, rate: int = 24, w: int = 64,
               h: int = 48, pix_fmt: str = "yuv420p", gop: int | None = None) -> Path:
    try:
        with av.open(str(path), "w", format=fmt) as c:
            s = c.add_stream(codec, rate=rate)
            s.width, s.height, s.pix_fmt = w, h, pix_fmt
            if gop:
                s.codec_context.gop_size = gop
            for i in range(frames):
                for p in s.encode(av.VideoFrame.from_ndarray(_picture(i, w, h), format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    except (av.error.FFmpegError, ValueError) as e:  # an encoder this PyAV build lacks
        pytest.skip(f"PyAV cannot write {path.name} with {codec}: {e}")
    return path


def with_rotation(src: Path, dst: Path, a: int, b: int, c: int, d: int) -> Path:
    """A copy of an MP4 whose first track header (tkhd) carries the display matrix [a b 0; c d 0; 0 0 1]."""
    data = bytearray(src.read_bytes())
    i = data.find(b"tkhd")
    assert i > 0
    matrix_at = i - 4 + (48 if data[i + 4] == 0 else 60)  # box start + header + version 0 / 1 fields
    struct.pack_into(">9i", data, matrix_at, a, b, 0, c, d, 0, 0, 0, 0x40000000)
    dst.write_bytes(bytes(data))
    return dst


ONE = 0x10000
VIDEOS = {
    # name: (codec, container format, options)
    "h264.mp4": ("libx264", None, dict(w=66, h=50)),
    "h264_444.mp4": ("libx264", None, dict(w=64, h=48, pix_fmt="yuv444p")),
    "h264_422.mkv": ("libx264", "matroska", dict(w=66, h=50, pix_fmt="yuv422p", rate=25, frames=60)),
    "vp9.webm": ("libvpx-vp9", "webm", dict(w=70, h=38, rate=25, frames=50)),
    "mjpeg.avi": ("mjpeg", "avi", dict(w=33, h=18, pix_fmt="yuvj420p", rate=10, frames=25)),
    "odd_height.avi": ("mjpeg", "avi", dict(w=34, h=17, pix_fmt="yuvj420p", rate=10, frames=25)),
    "mjpeg422.avi": ("mjpeg", "avi", dict(w=40, h=30, pix_fmt="yuvj422p", rate=12, frames=30)),
    "mpeg4.mkv": ("mpeg4", "matroska", dict(w=50, h=30, rate=30, frames=60)),
}
ROTATIONS = {  # name: display matrix (a, b, c, d)
    "rot90.mp4": (0, ONE, -ONE, 0),    # phones' portrait video: turn 90 degrees clockwise
    "rot270.mp4": (0, -ONE, ONE, 0),
    "rot180.mp4": (-ONE, 0, 0, -ONE),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {"_dir": d}


def video(videos: dict, name: str) -> Path:
    """Makes (once per module) and returns one of the test videos."""
    if name in videos:
        return videos[name]
    d = videos["_dir"]
    if name in VIDEOS:
        codec, fmt, opts = VIDEOS[name]
        videos[name] = make_video(d / name, codec, fmt=fmt, **opts)
    elif name in ROTATIONS:
        base = video(videos, "rotbase.mp4")
        videos[name] = with_rotation(base, d / name, *ROTATIONS[name])
    elif name == "rotbase.mp4":
        videos[name] = make_video(d / name, "libx264", w=64, h=48, rate=10, frames=20)
    elif name == "long.mp4":  # 30 s, a keyframe every 2 s: sparse sampling seeks
        videos[name] = make_video(d / name, "libx264", w=64, h=48, rate=10, frames=300, gop=20)
    elif name == "faststart.mp4":  # the index (moov) before the data
        path = d / name
        with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
            s = c.add_stream("libx264", rate=24)
            s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
            for i in range(48):
                for p in s.encode(av.VideoFrame.from_ndarray(_picture(i, 64, 48), format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        videos[name] = path
    else:
        raise KeyError(name)
    return videos[name]


# --------------------------------------------------------------------------------------------------------------
# The reference: PyAV decodes every frame; the documented policy picks them
# --------------------------------------------------------------------------------------------------------------


def reference_frames(path: Path) -> tuple[list[float], list[np.ndarray], float]:
    """(times, rgb frames with the display rotation applied, stream duration in seconds)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        tb = s.time_base
        start = s.start_time or 0
        times, rgb = [], []
        for f in c.decode(s):
            # The same double arithmetic as g3n: (pts - start) as an integer, times num / den.
            times.append((f.pts - start) * (tb.numerator / tb.denominator))
            a = f.to_ndarray(format="rgb24")
            rot = int(getattr(f, "rotation", 0) or 0)  # counter-clockwise degrees, as av_display_rotation_get
            assert rot % 90 == 0, rot
            rgb.append(np.ascontiguousarray(np.rot90(a, k=rot // 90)))
        if s.duration:
            duration = float(s.duration * tb)
        else:
            duration = c.duration / 1e6
    return times, rgb, duration


def targets(duration: float, fps: float, max_frames: int) -> list[float]:
    wanted = math.ceil(duration * fps) if duration > 0 else 1
    if wanted <= max_frames:
        return [k / fps for k in range(max(1, wanted)) if k == 0 or k / fps < duration]
    return [k * duration / max_frames for k in range(max_frames)]


def pick(times: list[float], ts: list[float]) -> list[int]:
    chosen: list[int] = []
    for t in ts:
        best = min(range(len(times)), key=lambda i: (abs(times[i] - t), times[i]))
        if not chosen or times[best] > times[chosen[-1]]:
            chosen.append(best)
    return chosen


def run_g3n(g3n, path: Path, out: Path, fps: float | None = None, max_frames: int | None = None, *extra):
    args = ["video-frames", "--video", path, "--out", out]
    if fps is not None:
        args += ["--fps", repr(fps)]
    if max_frames is not None:
        args += ["--max-frames", str(max_frames)]
    return g3n.run(*args, *extra, timeout=120)


def load_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def compare(g3n, path: Path, out: Path, fps: float, max_frames: int, expect_format: str,
            tol_max: float = TOL_LEVELS, tol_mean: float | None = None) -> dict:
    p = run_g3n(g3n, path, out, fps, max_frames)
    check_ok(p, f"video-frames {path.name} --fps {fps} --max-frames {max_frames}")
    got = json.loads((out / "frames.json").read_text())
    times, rgb, duration = reference_frames(path)
    assert got["format"].startswith(expect_format), got["format"]
    assert got["duration"] == pytest.approx(duration, abs=1e-6), (got["duration"], duration)
    want = pick(times, targets(got["duration"], fps, max_frames))
    got_ts = [f["timestamp"] for f in got["frames"]]
    assert got_ts == pytest.approx([times[i] for i in want], abs=1e-9), (
        f"{path.name} fps {fps} max {max_frames}: g3n took frames at {got_ts}, the reference at "
        f"{[times[i] for i in want]}")
    worst, worst_mean = 0, 0.0
    for f, i in zip(got["frames"], want):
        a = load_png(out / f["file"]).astype(np.int16)
        b = rgb[i].astype(np.int16)
        assert a.shape == b.shape, (f["file"], a.shape, b.shape)
        assert (f["width"], f["height"]) == (b.shape[1], b.shape[0])
        worst = max(worst, int(np.abs(a - b).max()))
        worst_mean = max(worst_mean, float(np.abs(a - b).mean()))
    assert worst <= tol_max, f"{path.name}: max |g3n - PyAV| = {worst} levels > {tol_max}"
    if tol_mean is not None:
        assert worst_mean <= tol_mean, f"{path.name}: mean |g3n - PyAV| = {worst_mean:.2f} levels > {tol_mean}"
    print(f"{path.name} fps={fps} max_frames={max_frames}: {len(want)} frames, max |diff| = {worst} levels, "
          f"mean {worst_mean:.3f}")
    return got


# --------------------------------------------------------------------------------------------------------------
# Parity
# --------------------------------------------------------------------------------------------------------------


CASES = [
    ("h264.mp4", "mov/h264", 1.0, 32),
    ("h264.mp4", "mov/h264", 7.0, 32),     # targets between frames: nearest
    ("h264.mp4", "mov/h264", 60.0, 100),   # above the frame rate: each frame once
    ("h264.mp4", "mov/h264", 24.0, 5),     # longer than max_frames / fps: 5 spread over the video
    ("h264_444.mp4", "mov/h264", 3.0, 32),
    ("h264_422.mkv", "matroska/h264", 2.0, 32),
    ("vp9.webm", "matroska/vp9", 4.0, 32),
    ("mjpeg.avi", "avi/mjpeg", 3.0, 32),
    ("mjpeg422.avi", "avi/mjpeg", 5.0, 32),
    ("mpeg4.mkv", "matroska/mpeg4", 2.5, 32),
    ("rot90.mp4", "mov/h264", 2.0, 32),
    ("rot270.mp4", "mov/h264", 2.0, 32),
    ("rot180.mp4", "mov/h264", 2.0, 32),
    ("long.mp4", "mov/h264", 0.1, 32),     # one frame every 10 s: seeks past whole GOPs
    ("long.mp4", "mov/h264", 1.0, 4),      # 4 spread over 30 s: 0, 7.5, 15, 22.5 s
    ("long.mp4", "mov/h264", 0.3, 32),     # gaps of 3.3 s: in order
]


@pytest.mark.parametrize("name,fmt,fps,max_frames", CASES, ids=[f"{c[0]}-fps{c[2]}-max{c[3]}" for c in CASES])
def test_frames_match_pyav(g3n, videos, tmp_path, name, fmt, fps, max_frames):
    compare(g3n, video(videos, name), tmp_path / "out", fps, max_frames, fmt)


def test_odd_height_420(g3n, videos, tmp_path):
    """Same frames; pixels equal on average (the two libswscale versions treat the odd chroma row apart)."""
    compare(g3n, video(videos, "odd_height.avi"), tmp_path / "out", 3.0, 32, "avi/mjpeg", tol_max=255, tol_mean=2.0)


def test_rotation_turns_the_picture(g3n, videos, tmp_path):
    """Independent of PyAV's rotation attribute: a 64x48 clip turned 90 degrees clockwise is 48x64."""
    base = video(videos, "rotbase.mp4")
    p = run_g3n(g3n, video(videos, "rot90.mp4"), tmp_path / "r", 1.0, 1)
    check_ok(p, "video-frames rot90.mp4")
    got = load_png(tmp_path / "r" / "frame_000.png").astype(np.int16)
    with av.open(str(base)) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(np.int16)
    assert got.shape == (64, 48, 3)
    assert np.abs(got - np.rot90(first, k=-1)).max() <= TOL_LEVELS


def test_default_sampling_is_one_frame_per_second(g3n, videos, tmp_path):
    p = g3n.run("video-frames", "--video", video(videos, "long.mp4"), "--out", tmp_path / "d")
    check_ok(p, "video-frames long.mp4")
    got = json.loads((tmp_path / "d" / "frames.json").read_text())
    # 30 s at 1 frame per second: 30 targets (<= 32), t = 0, 1, ..., 29 s, each a frame of the 10 fps video.
    assert [f["timestamp"] for f in got["frames"]] == pytest.approx([float(k) for k in range(30)], abs=1e-9)


# --------------------------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------------------------


def _expect_error(g3n, path: Path, out: Path, word: str, *args: str) -> None:
    p = g3n.run("video-frames", "--video", path, "--out", out, *args, timeout=60)
    assert p.returncode == 1, f"{path.name}: expected a clean error\n{describe_run(p)}"
    assert "g3n: error:" in p.stderr and word.lower() in p.stderr.lower(), f"{path.name}: {p.stderr}"
    assert str(path) in p.stderr, f"{path.name}: the error should name the file: {p.stderr}"


@pytest.mark.badinput
def test_bad_video_files(g3n, videos, tmp_path):
    from PIL import Image

    mp4 = video(videos, "h264.mp4").read_bytes()
    faststart = video(videos, "faststart.mp4").read_bytes()
    webm = video(videos, "vp9.webm").read_bytes()
    avi = video(videos, "mjpeg.avi").read_bytes()
    files = {
        "empty.mp4": (b"", "empty"),
        "text.mp4": (b"hello, this is a text file and not a video at all\n" * 5, "not a video"),
        "truncated.mp4": (mp4[: len(mp4) // 2], "truncated"),         # the index (moov) is at the end: cut off
        "header_only.mp4": (mp4[:64], "truncated"),
        "truncated_faststart.mp4": (faststart[: len(faststart) * 2 // 3], "truncated"),
        "truncated.webm": (webm[: len(webm) // 2], "truncated"),
        "truncated.avi": (avi[: len(avi) // 2], "truncated"),
        "playlist.mp4": (b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n" + str(video(videos, "h264.mp4")).encode()
                         + b"\n#EXT-X-ENDLIST\n", "not a video container"),
        "concat.mp4": (b"ffconcat version 1.0\nfile " + str(video(videos, "h264.mp4")).encode() + b"\n",
                       "not a video container"),
    }
    paths = {}
    for name, (data, word) in files.items():
        paths[name] = (tmp_path / name, word)
        paths[name][0].write_bytes(data)
    png = tmp_path / "image.mp4"
    Image.fromarray(_picture(0, 16, 16)).save(png, format="PNG")
    paths["image.mp4"] = (png, "not a video container")
    audio = tmp_path / "audio.m4a"
    with av.open(str(audio), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=16000)
        for i in range(8):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, i * 1024
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    paths["audio.m4a"] = (audio, "no video stream")
    zero = tmp_path / "zero.avi"
    with av.open(str(zero), "w", format="avi") as c:
        s = c.add_stream("mjpeg", rate=10)
        s.width, s.height, s.pix_fmt = 32, 32, "yuvj420p"
        if hasattr(c, "start_encoding"):
            c.start_encoding()
    paths["zero.avi"] = (zero, "zero-length")

    for name, (path, word) in paths.items():
        # fps 30: every frame is a target, so a cut anywhere is reached
        _expect_error(g3n, path, tmp_path / "o", word, "--fps", "30")
    _expect_error(g3n, tmp_path / "nope.mp4", tmp_path / "o", "cannot open")
    _expect_error(g3n, tmp_path, tmp_path / "o", "not a regular file")
    _expect_error(g3n, video(videos, "h264.mp4"), tmp_path / "o", "limit", "--max-pixels", "1000")


@pytest.mark.badinput
def test_damaged_videos_never_crash(g3n, videos, tmp_path):
    """Cuts and random byte damage in every container: frames or a clean error, never a signal or a hang."""
    rng = random.Random(5)
    sources = [video(videos, n) for n in ("h264.mp4", "vp9.webm", "mjpeg.avi", "mpeg4.mkv", "faststart.mp4")]
    for k in range(60):
        src = sources[k % len(sources)]
        data = bytearray(src.read_bytes())
        if k % 3 == 0:
            data = data[: rng.randrange(1, len(data))]
        else:
            for _ in range(rng.randint(1, 24)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        p = tmp_path / f"damaged{k}{src.suffix}"
        p.write_bytes(bytes(data))
        r = g3n.run("video-frames", "--video", p, "--fps", rng.choice(["0.5", "3", "30"]), "--out", tmp_path / "o",
                    timeout=60)
        assert r.returncode in (0, 1), f"{src.name} damaged #{k}: {describe_run(r)}"
        if r.returncode == 1:
            assert "g3n: error:" in r.stderr and str(p) in r.stderr, r.stderr
