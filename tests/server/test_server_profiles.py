"""MatFormer sizes served from one loaded model: /v1/models lists them, a request's `model` picks one, and each
answer equals `g3n run --profile` (alternating sizes on one slot: elastic execution, exact)."""

from __future__ import annotations

import pytest

from server_harness import ServerProcess

openai = pytest.importorskip("openai")

SPEC = "skip=4;ffn=128"
PROMPT = "Tell me about the sea."


@pytest.fixture(scope="module")
def profiled(g3n, tiny):
    s = ServerProcess(g3n.path, tiny, "--parallel", "1", "--profile", f"small={SPEC}", threads=g3n.threads)
    c = openai.OpenAI(base_url=s.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)
    yield s, c
    c.close()
    s.stop_and_check()


def cli(g3n, tiny, *args) -> str:
    p = g3n.run("run", "-m", tiny, PROMPT, "-t", str(g3n.threads), "--temperature", "0", "-n", "12", *args)
    assert p.returncode == 0, p.stderr
    return p.stdout[:-1]


def test_models_lists_the_profiles(profiled, tiny):
    _, client = profiled
    ids = [m.id for m in client.models.list().data]
    assert ids == [tiny.name, f"{tiny.name}/small"]
    one = client.models.retrieve(f"{tiny.name}/small")
    assert one.id == f"{tiny.name}/small"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(f"{tiny.name}/huge")


def test_each_size_equals_g3n_run_and_switching_is_exact(g3n, tiny, profiled):
    _, client = profiled
    expected = {tiny.name: cli(g3n, tiny), f"{tiny.name}/small": cli(g3n, tiny, "--profile", SPEC)}
    assert expected[tiny.name] != expected[f"{tiny.name}/small"]
    for model in [tiny.name, f"{tiny.name}/small", tiny.name, f"{tiny.name}/small", f"{tiny.name}/small"]:
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}],
                                           temperature=0, max_tokens=12)
        assert r.model == model
        assert r.choices[0].message.content == expected[model], model
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=f"{tiny.name}/huge", messages=[{"role": "user", "content": PROMPT}])


def test_bad_profile_option_is_refused(g3n, tiny):
    p = g3n.run("serve", "-m", tiny, "--port", "0", "--profile", "nonsense")
    assert p.returncode == 1 and "NAME=SPEC" in p.stderr, p.stderr
    p = g3n.run("serve", "-m", tiny, "--port", "0", "--profile", "x=skip=99")
    assert p.returncode == 1 and "99" in p.stderr, p.stderr


def test_transcription_with_a_profile(profiled, tiny, tmp_path):
    import struct

    import numpy as np

    s, client = profiled
    x = (0.2 * np.random.default_rng(1).standard_normal(16000 * 2)).astype("<f4").tobytes()
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(x)) + b"WAVEfmt " +
                    struct.pack("<IHHIIHH", 16, 3, 1, 16000, 64000, 4, 32) + b"data" + struct.pack("<I", len(x)) + x)
    with wav.open("rb") as f:
        r = client.audio.transcriptions.create(model=f"{tiny.name}/small", file=f, extra_body={"max_tokens": 4})
    assert isinstance(r.text, str)
    with wav.open("rb") as f, pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(model=f"{tiny.name}/huge", file=f)
