"""The Python module `g3n` (python/g3n_module.cpp) against the g3n binary, on a `make-random --preset tiny` checkpoint
(real vocabulary, reduced vision and audio towers).

Where the module comes from: <directory of the g3n binary>/python when the CMake build made it there
(-DG3N_PYTHON=ON, as scripts/test does), else whatever `import g3n` finds (`pip install .`). Without it the tests
are skipped, unless G3N_REQUIRE_PYTHON=1. The binary (G3N_BIN, default build/release/g3n) makes the checkpoint and
gives the expected outputs; without it the tests are skipped too (a failure with G3N_REQUIRE_BINARY=1).
"""

from __future__ import annotations

import io
import json
import re
import struct
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "parity"))

from g3n_harness import G3N, _flag, binary_path, check_ok  # noqa: E402

THREADS = 2


def _import_module():
    built = binary_path().parent / "python"
    if any(built.glob("g3n*.so")) and str(built) not in sys.path:
        sys.path.insert(0, str(built))
    try:
        import g3n

        return g3n, ""
    except ImportError as e:
        return None, f"{e} (looked in {built} and on sys.path)"


g3n, _why = _import_module()


@pytest.fixture(scope="module")
def cli() -> G3N:
    b = binary_path()
    if not b.is_file():
        if _flag("G3N_REQUIRE_BINARY"):
            pytest.fail(f"g3n binary not found at {b} and G3N_REQUIRE_BINARY is set")
        pytest.skip(f"g3n binary not found at {b} (build it, or set G3N_BIN)")
    return G3N(b, threads=THREADS)


@pytest.fixture(scope="module", autouse=True)
def _module():
    if g3n is None:
        msg = ("the Python module g3n is not importable: " + _why + "; build it with `pip install .` or "
               "cmake -DG3N_PYTHON=ON")
        if _flag("G3N_REQUIRE_PYTHON"):
            pytest.fail(msg + " and G3N_REQUIRE_PYTHON is set")
        pytest.skip(msg)


@pytest.fixture(scope="module")
def tiny(cli, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("py_tiny") / "tiny"
    check_ok(cli.run("make-random", "--preset", "tiny", "--dtype", "f32", "--seed", "9", "--out", d), "make-random")
    return d


@pytest.fixture(scope="module")
def model(tiny):
    return g3n.Model(str(tiny), threads=THREADS)


@pytest.fixture(scope="module")
def cfg(tiny) -> dict:
    return json.loads((tiny / "config.json").read_text())


# ------------------------------------------------------------------------------------------------------------------
# Media
# ------------------------------------------------------------------------------------------------------------------


def rgb_array(seed: int, h: int = 200, w: int = 240) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(xx + yy) % 256, (3 * xx) % 256, rng.integers(0, 256, (h, w))], -1).astype(np.uint8)


def png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def waveform(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 600 * t) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def wav_f32_bytes(x: np.ndarray, rate: int = 16000) -> bytes:
    data = np.asarray(x, "<f4").tobytes()
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt "
            + struct.pack("<IHHIIHH", 16, 3, 1, rate, rate * 4, 4, 32) + b"data" + struct.pack("<I", len(data)) + data)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("py_media")
    img = rgb_array(1)
    wav = waveform(1.0, 4)
    (d / "a.png").write_bytes(png_bytes(img))
    (d / "clip.wav").write_bytes(wav_f32_bytes(wav))
    return {"img": img, "png": d / "a.png", "wav": wav, "wav_path": d / "clip.wav"}


def media_ids(cfg: dict, text_ids: list[int]) -> list[int]:
    """<bos><start_of_turn> + one image run + one audio run + text: the placeholders as the processor expands them."""
    image = [cfg["boi_token_id"]] + [cfg["image_token_id"]] * 256 + [cfg["eoi_token_id"]]
    audio = [cfg["boa_token_id"]] + [cfg["audio_token_id"]] * 188 + [cfg["eoa_token_id"]]
    return [2, 105] + image + audio + text_ids


# ------------------------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------------------------


def test_greedy_generate_equals_cli(cli, tiny, model):
    for prompt in ["Write a short poem about the sea.", "Hello"]:
        p = cli.run("run", "-m", tiny, "-t", THREADS, prompt, "-n", "24", "--temperature", "0")
        check_ok(p, "run")
        assert model.generate(prompt, max_tokens=24, temperature=0) + "\n" == p.stdout
        assert model.last_result["finish_reason"] in ("stop", "length")
    # raw: the text itself, <bos> added, no template
    p = cli.run("run", "-m", tiny, "-t", THREADS, "--raw", "The capital of France is", "-n", "16", "--temperature", "0")
    check_ok(p, "run --raw")
    assert model.generate("The capital of France is", raw=True, max_tokens=16, temperature=0) + "\n" == p.stdout
    # a system prompt, and sampling with a seed
    args = ["-s", "Be brief.", "Hi!", "-n", "16", "--temperature", "0.9", "--top-k", "40", "--seed", "7"]
    p = cli.run("run", "-m", tiny, "-t", THREADS, *args)
    check_ok(p, "run (sampled)")
    got = model.generate("Hi!", system="Be brief.", max_tokens=16, temperature=0.9, top_k=40, seed=7)
    assert got + "\n" == p.stdout


def test_prompt_as_token_ids(model):
    """A list of ids is the whole sequence: the ids of the rendered chat turn give the same answer as the text."""
    text = model.generate("Hello", max_tokens=12, temperature=0)
    ids = model.tokenize("<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n", add_bos=True)
    assert model.generate(ids, max_tokens=12, temperature=0) == text
    assert model.generate(np.array(ids, dtype=np.int64), max_tokens=12, temperature=0) == text


def test_streamed_chat_equals_non_streamed(cli, tiny, model, tmp_path):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the tallest mountain?"},
        {"role": "assistant", "content": "Everest."},
        {"role": "user", "content": [{"type": "text", "text": "And the second?"}]},
    ]
    text = model.chat(messages, max_tokens=24, temperature=0)
    stream = model.chat(messages, stream=True, max_tokens=24, temperature=0)
    pieces = list(stream)
    assert "".join(pieces) == text
    assert stream.finish_reason in ("stop", "length")
    if len(text) > 1:
        assert len(pieces) > 1, "the answer came in one piece: not streamed"
    # the same conversation through `g3n run --messages`
    conv = tmp_path / "conv.json"
    conv.write_text(json.dumps(messages))
    p = cli.run("run", "-m", tiny, "-t", THREADS, "--messages", conv, "-n", "24", "--temperature", "0")
    check_ok(p, "run --messages")
    assert text + "\n" == p.stdout
    # sampled: the same seed, the same pieces
    sampled = model.chat(messages, max_tokens=24, temperature=1.0, seed=3)
    assert "".join(model.chat(messages, stream=True, max_tokens=24, temperature=1.0, seed=3)) == sampled
    # generate(stream=True) too
    assert "".join(model.generate("Hello", stream=True, max_tokens=12, temperature=0)) == \
        model.generate("Hello", max_tokens=12, temperature=0)


def test_stream_closed_early_leaves_the_model_usable(model):
    expected = model.generate("Count to ten.", max_tokens=20, temperature=0)
    it = model.generate("Count to ten.", stream=True, max_tokens=200, temperature=0)
    next(it, None)
    it.close()
    assert list(it) == []
    it2 = model.chat([{"role": "user", "content": "Go on."}], stream=True, max_tokens=200, temperature=0)
    del it2  # dropped unread: cancelled and joined
    assert model.generate("Count to ten.", max_tokens=20, temperature=0) == expected


def test_chat_reuses_the_cached_prefix(model):
    conv = [{"role": "user", "content": "Name a colour."}]
    first = model.chat(conv, max_tokens=8, temperature=0)
    conv += [{"role": "assistant", "content": first}, {"role": "user", "content": "Another one."}]
    model.chat(conv, max_tokens=8, temperature=0)
    r = model.last_result
    assert r["reused_tokens"] > 0 and r["prompt_tokens"] > r["reused_tokens"]


def test_numpy_image_and_waveform_equal_the_files(cli, tiny, model, media, cfg, tmp_path):
    """Pixels as a uint8 array (Model::encode_rgb) = the same pixels as a PNG file or its bytes; a float32 waveform
    (Model::encode_audio_samples) = the same samples as a float WAV file or its bytes; and all = `g3n score`."""
    ids = media_ids(cfg, model.tokenize("Describe both.", add_bos=False) + [106, 107, 105])
    kw = dict(image_size=256)
    from_arrays = model.score(ids, images=[media["img"]], audio=[media["wav"]], **kw)
    from_files = model.score(ids, images=[media["png"]], audio=[str(media["wav_path"])], **kw)
    from_bytes = model.score(ids, images=[media["png"].read_bytes()], audio=[media["wav_path"].read_bytes()], **kw)
    assert from_arrays.shape == (len(ids), model.vocab_size) and from_arrays.dtype == np.float32
    np.testing.assert_array_equal(from_arrays, from_files)
    np.testing.assert_array_equal(from_arrays, from_bytes)
    out = tmp_path / "logits.npy"
    check_ok(cli.run("score", "-m", tiny, "-t", THREADS, "--ids", ",".join(map(str, ids)), "--out", out,
                     "--image", media["png"], "--audio", media["wav_path"], "--image-size", "256"), "score")
    np.testing.assert_array_equal(from_arrays, np.load(out))
    # The media matter: without them the logits differ.
    assert not np.array_equal(from_arrays, model.score(ids, images=[rgb_array(2)], audio=[media["wav"]], **kw))

    # generate / chat with media: arrays = files = `g3n run --image --audio`
    p = cli.run("run", "-m", tiny, "-t", THREADS, "--image", media["png"], "--audio", media["wav_path"],
                "--image-size", "256", "Describe both.", "-n", "12", "--temperature", "0")
    check_ok(p, "run with media")
    got = model.generate("Describe both.", images=[media["img"]], audio=[media["wav"]], max_tokens=12, temperature=0,
                         **kw)
    assert got + "\n" == p.stdout
    assert model.generate("Describe both.", images=media["png"], audio=media["wav_path"], max_tokens=12,
                          temperature=0, **kw) == got
    # chat: media as content parts, or as kwargs (first in the last user message)
    parts = [{"type": "image", "image": media["img"]}, {"type": "audio", "audio": media["wav"]},
             {"type": "text", "text": "Describe both."}]
    assert model.chat([{"role": "user", "content": parts}], max_tokens=12, temperature=0, **kw) == got
    import base64

    uri = "data:image/png;base64," + base64.b64encode(media["png"].read_bytes()).decode()
    b64 = base64.b64encode(media["wav_path"].read_bytes()).decode()
    openai_parts = [{"type": "image_url", "image_url": {"url": uri}},
                    {"type": "input_audio", "input_audio": {"data": b64, "format": "wav"}},
                    {"type": "text", "text": "Describe both."}]
    assert model.chat([{"role": "user", "content": openai_parts}], max_tokens=12, temperature=0, **kw) == got
    assert model.chat([{"role": "user", "content": "Describe both."}], images=[media["img"]], audio=[media["wav"]],
                      max_tokens=12, temperature=0, **kw) == got


def test_score_equals_cli(cli, tiny, model, tmp_path):
    ids = [2, 105, 2364, 107, 9259, 236888, 106, 107, 105, 4368, 107] + list(range(1000, 1040))
    out = tmp_path / "s.npy"
    check_ok(cli.score(tiny, ids, out, threads=THREADS), "score")
    got = model.score(ids)
    assert got.shape == (len(ids), model.vocab_size) and got.dtype == np.float32
    np.testing.assert_array_equal(got, np.load(out))
    np.testing.assert_array_equal(model.score(np.array(ids, dtype=np.int32)), got)


def test_tokenize_and_detokenize_equal_cli(cli, tiny, model):
    text = "Hello, world! <start_of_turn> ünïcödé 日本語"
    p = cli.run("tokenize", "-m", tiny, text)
    check_ok(p, "tokenize")
    ids = model.tokenize(text)
    assert ids == [int(t) for t in re.split(r"[,\s]+", p.stdout.strip()) if t]
    assert model.tokenize(text, add_bos=False) == ids[1:]
    p = cli.run("detokenize", "-m", tiny, *map(str, ids))
    check_ok(p, "detokenize")
    assert model.detokenize(ids) + "\n" == p.stdout or model.detokenize(ids) == p.stdout
    assert model.detokenize(ids, skip_special_tokens=True) == text.replace("<start_of_turn>", "")


def test_transcribe_array_file_and_bytes_equal_cli(cli, tiny, model, media):
    p = cli.run("transcribe", "-m", tiny, "-t", THREADS, media["wav_path"], "-n", "12", "-l", "English")
    check_ok(p, "transcribe")
    got = model.transcribe(media["wav"], language="English", max_tokens=12)
    assert got + "\n" == p.stdout
    assert model.transcribe(str(media["wav_path"]), language="English", max_tokens=12) == got
    assert model.transcribe(media["wav_path"].read_bytes(), language="English", max_tokens=12) == got
    p = cli.run("transcribe", "-m", tiny, "-t", THREADS, media["wav_path"], "-n", "12", "--translate-to", "French")
    check_ok(p, "transcribe --translate-to")
    assert model.transcribe(media["wav"], translate_to="French", max_tokens=12) + "\n" == p.stdout


def test_profile_equals_cli(cli, tiny, tmp_path):
    spec = "ffn=128"  # half of the tiny model's FFN width
    p = cli.run("run", "-m", tiny, "-t", THREADS, "--profile", spec, "Hello", "-n", "16", "--temperature", "0")
    check_ok(p, "run --profile")
    m = g3n.Model(str(tiny), profile=spec, threads=THREADS)
    assert m.generate("Hello", max_tokens=16, temperature=0) + "\n" == p.stdout
    # elastic: the whole model, then the profile switched on the same loaded weights
    full = g3n.Model(str(tiny), threads=THREADS)
    full.generate("Hello", max_tokens=16, temperature=0)
    full.set_profile(spec)
    assert full.generate("Hello", max_tokens=16, temperature=0) + "\n" == p.stdout


def test_the_gil_is_released_while_computing(model):
    ids = [2] + list(range(1000, 1400))
    done = threading.Event()
    ticks = 0

    def work():
        model.score(ids)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks += 1
    t.join()
    assert ticks > 1000, f"the main thread ran {ticks} loop iterations while score() computed: the GIL was held"


@pytest.mark.badinput
def test_bad_input_raises_the_engines_message(model, tiny, tmp_path):
    missing = str(tmp_path / "no_such_image.png")
    with pytest.raises(g3n.Error, match=re.escape(missing)):
        model.generate("Hi", images=[missing], max_tokens=2)
    assert isinstance(g3n.Error("x"), ValueError)
    with pytest.raises(g3n.Error, match=r"uint8 \[height, width, 3\].*\(32, 32, 4\)"):
        model.generate("Hi", images=[np.zeros((32, 32, 4), np.uint8)], max_tokens=2)
    with pytest.raises(g3n.Error, match=r"uint8 \[height, width, 3\].*float32"):
        model.generate("Hi", images=[np.zeros((32, 32, 3), np.float32)], max_tokens=2)
    with pytest.raises(g3n.Error, match=r"mono float32 waveform.*\(2, 16000\)"):
        model.generate("Hi", audio=[np.zeros((2, 16000), np.float32)], max_tokens=2)
    with pytest.raises(g3n.Error, match="not a finite number"):
        model.generate("Hi", audio=[np.full(16000, np.nan, np.float32)], max_tokens=2)
    with pytest.raises(g3n.Error, match="images"):
        model.generate("Hi", images=[12], max_tokens=2)
    with pytest.raises(g3n.Error, match="not valid base64|base64"):
        model.chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]}])
    with pytest.raises(g3n.Error, match="remote URLs"):
        model.chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}])
    with pytest.raises(g3n.Error, match="alternate|user"):
        model.chat([{"role": "assistant", "content": "I go first."}], max_tokens=2)
    with pytest.raises(g3n.Error, match="image_size must be 256, 512 or 768"):
        model.generate("Hi", images=[np.zeros((64, 64, 3), np.uint8)], image_size=100, max_tokens=2)
    with pytest.raises(g3n.Error, match="token id"):
        model.generate([2, 10**9], max_tokens=2)
    with pytest.raises(g3n.Error, match="temperature"):
        model.generate("Hi", temperature=-1.0, max_tokens=2)
    with pytest.raises(g3n.Error, match="placeholder|image"):
        model.score([2, 105, 2364], images=[np.zeros((64, 64, 3), np.uint8)], image_size=256)
    with pytest.raises(g3n.Error, match=re.escape(str(tmp_path / "nowhere"))):
        g3n.Model(str(tmp_path / "nowhere"))
    with pytest.raises(g3n.Error):
        model.transcribe(str(tmp_path / "missing.wav"))
    with pytest.raises(g3n.Error):
        model.set_profile("not a profile")
    # streaming: bad input raises at the call, not at the first next()
    with pytest.raises(g3n.Error, match=re.escape(missing)):
        model.chat([{"role": "user", "content": "x"}], images=[missing], stream=True)
    # the model still works after all that
    assert isinstance(model.generate("Hi", max_tokens=2, temperature=0), str)
