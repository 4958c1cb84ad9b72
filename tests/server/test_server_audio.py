"""/v1/audio/transcriptions and /v1/audio/translations through the official `openai` client, on the tiny random
multimodal checkpoint: the answers equal `g3n transcribe` on the same file, long audio comes back as one segment
per clip (cut at the quiet point), every response_format works, and bad requests get 4xx."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

openai = pytest.importorskip("openai")

N = {"max_tokens": 8}  # g3n's form field: tokens per clip (the random model never stops by itself)


def write_wav(path: Path, x: np.ndarray) -> Path:
    d = x.astype("<f4").tobytes()
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(d)) + b"WAVEfmt " +
                     struct.pack("<IHHIIHH", 16, 3, 1, 16000, 64000, 4, 32) + b"data" + struct.pack("<I", len(d)) + d)
    return path


@pytest.fixture(scope="module")
def client(server):
    c = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=300)
    yield c
    c.close()


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """40 s of noise with a quiet stretch at 24.0-24.4 s: two clips, cut inside the quiet."""
    rng = np.random.default_rng(7)
    x = 0.2 * rng.standard_normal(16000 * 40).astype(np.float32)
    x[24 * 16000: int(24.4 * 16000)] *= 1e-3
    return write_wav(tmp_path_factory.mktemp("audio") / "talk.wav", x)


def cli(g3n, tiny, audio: Path, *args) -> str:
    p = g3n.run("transcribe", "-m", tiny, audio, "-t", str(g3n.threads), "-n", "8", *args)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_transcription_equals_g3n_transcribe(g3n, tiny, client, recording):
    expected = cli(g3n, tiny, recording, "-l", "English").strip()
    with recording.open("rb") as f:
        r = client.audio.transcriptions.create(model=tiny.name, file=f, language="en", response_format="verbose_json",
                                                 extra_body=N)
    assert r.text == expected
    segs = r.segments
    assert len(segs) == 2 and segs[0].start == 0.0 and 24.0 <= segs[0].end <= 24.4 and segs[1].start == segs[0].end
    assert abs(segs[1].end - 40.0) < 1e-6 and r.duration == pytest.approx(40.0)


def test_response_formats(g3n, tiny, client, recording):
    srt = cli(g3n, tiny, recording, "-f", "srt")
    with recording.open("rb") as f:
        got = client.audio.transcriptions.create(model=tiny.name, file=f, response_format="srt", extra_body=N)
    assert got == srt and got.count("-->") == 2 and got.startswith("1\n00:00:00,000 --> 00:00:24,")
    with recording.open("rb") as f:
        vtt = client.audio.transcriptions.create(model=tiny.name, file=f, response_format="vtt", extra_body=N)
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> ") and vtt.count("-->") == 2
    with recording.open("rb") as f:
        text = client.audio.transcriptions.create(model=tiny.name, file=f, response_format="text", extra_body=N)
    assert text.strip() == cli(g3n, tiny, recording).strip()


def test_translation_equals_g3n_transcribe(g3n, tiny, client, tmp_path):
    wav = write_wav(tmp_path / "short.wav", 0.2 * np.random.default_rng(3).standard_normal(16000 * 3))
    expected = cli(g3n, tiny, wav, "--translate-to", "English", "--translation-only").strip()
    with wav.open("rb") as f:
        r = client.audio.translations.create(model=tiny.name, file=f, extra_body=N)
    assert r.text == expected


def test_bad_requests(server, tmp_path):
    def post(fields: dict, files: dict):
        import requests  # the openai package depends on httpx; requests may be absent

        return requests.post(server.base_url + "/v1/audio/transcriptions", data=fields, files=files, timeout=60)

    pytest.importorskip("requests")
    r = post({"model": "x"}, {})
    assert r.status_code == 400 and "file" in r.json()["error"]["message"]
    r = post({"response_format": "mp3"}, {"file": ("a.wav", b"RIFF")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"
    r = post({}, {"file": ("a.wav", b"this is not audio at all")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file", r.text
    r = post({"temperature": "hot"}, {"file": ("a.wav", b"RIFF")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "temperature"
    r = post({"max_tokens": "0"}, {"file": ("a.wav", b"RIFF")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    r = post({"model": "gpt-4o-transcribe"}, {"file": ("a.wav", (tmp_path / "x").write_bytes(b"1") and b"1")})
    assert r.status_code == 404
