"""`g3n serve` through the official `openai` client, on the tiny random checkpoint:

- chat completions, plain and streamed (chunks, usage in the last chunk, `data: [DONE]`), completions, models;
- the server's answer is `g3n run`'s answer: greedy, seeded sampling, and stop strings;
- a conversation continued on the server reuses the slot's cached prefix.
The web page: test_web_page.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")

from server_harness import sse_events  # noqa: E402

PROMPT = "Tell me about the sea."


@pytest.fixture(scope="module")
def client(server):
    c = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)
    yield c
    c.close()


@pytest.fixture(scope="module")
def model_id(client):
    return client.models.list().data[0].id


def cli_answer(g3n, tiny, prompt, *args):
    p = g3n.run("run", "-m", tiny, prompt, "-t", str(g3n.threads), *args)
    assert p.returncode == 0, p.stderr
    assert p.stdout.endswith("\n")
    return p.stdout[:-1]


def test_models_list(client, tiny):
    models = client.models.list().data
    assert [m.id for m in models] == [tiny.name]
    assert models[0].object == "model"
    one = client.models.retrieve(tiny.name)
    assert one.id == tiny.name


def test_health_and_metrics(server):
    status, body = server.get_json("/health")
    assert status == 200 and body["status"] == "ok" and body["slots"] == 2
    m = server.metrics()
    assert m["g3n_slots"] == 2
    for name in ("g3n_requests_active", "g3n_requests_queued", "g3n_generated_tokens_total",
                 "g3n_prompt_tokens_total", "g3n_time_to_first_token_seconds_count",
                 "g3n_time_per_output_token_seconds_count"):
        assert name in m, name


def test_greedy_chat_equals_g3n_run(g3n, tiny, client, model_id):
    expected = cli_answer(g3n, tiny, PROMPT, "--temperature", "0", "-n", "20")
    r = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": PROMPT}],
                                       temperature=0, max_tokens=20, seed=3)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == expected
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 20
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    prompt_ids = g3n.run("tokenize", "-m", tiny, "--chat", PROMPT)
    assert prompt_ids.returncode == 0, prompt_ids.stderr
    assert r.usage.prompt_tokens == len(prompt_ids.stdout.replace(",", " ").split())


def test_seeded_sampling_equals_g3n_run(g3n, tiny, client, model_id):
    # Temperature, top-k and top-p from the checkpoint's generation_config.json on both sides.
    expected = cli_answer(g3n, tiny, PROMPT, "--seed", "11", "-n", "16")
    kwargs = dict(model=model_id, messages=[{"role": "user", "content": PROMPT}], max_tokens=16, seed=11)
    a = client.chat.completions.create(**kwargs).choices[0].message.content
    b = client.chat.completions.create(**kwargs).choices[0].message.content
    assert a == b == expected
    # Every sampling parameter. A prompt no slot has seen: with top-k off the draw is sensitive to the last bits of
    # the logits, and re-feeding a whole cached prompt computes its last token alone (a 1-row matmul), which can
    # differ in the last bits from the chunked prefill `g3n run` does.
    prompt = "A prompt of its own, about rivers."
    hot = cli_answer(g3n, tiny, prompt, "--seed", "5", "-n", "16", "--temperature", "1.5", "--top-k", "0",
                     "--top-p", "0.9", "--min-p", "0.01", "--presence-penalty", "0.5", "--frequency-penalty", "0.25")
    r = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": prompt}], max_tokens=16,
                                       seed=5, temperature=1.5, top_p=0.9, presence_penalty=0.5,
                                       frequency_penalty=0.25, extra_body={"top_k": 0, "min_p": 0.01})
    assert r.choices[0].message.content == hot


def test_long_prompt_and_follow_up_equal_g3n_run(g3n, tiny, client, model_id, tmp_path):
    # ~800 prompt tokens: the server prefills chunk by chunk (256 tokens a turn), taking turns with other slots;
    # the result must be what one sync() of the whole prompt computes.
    long = " ".join(f"item{i}" for i in range(150))
    expected = cli_answer(g3n, tiny, long, "--temperature", "0", "-n", "12")
    msgs = [{"role": "user", "content": long}]
    first = client.chat.completions.create(model=model_id, messages=msgs, temperature=0, max_tokens=12)
    assert first.usage.prompt_tokens > 700
    assert first.choices[0].message.content == expected
    # The next turn reuses the slot's cache and prefills the rest in chunks from there.
    msgs += [{"role": "assistant", "content": expected},
             {"role": "user", "content": " ".join(f"more{i}" for i in range(100))}]
    conv = tmp_path / "conv.json"
    conv.write_text(json.dumps(msgs))
    p = g3n.run("run", "-m", tiny, "--messages", conv, "--temperature", "0", "-n", "12", "-t", str(g3n.threads))
    assert p.returncode == 0, p.stderr
    second = client.chat.completions.create(model=model_id, messages=msgs, temperature=0, max_tokens=12)
    assert second.choices[0].message.content == p.stdout[:-1]
    assert second.usage.prompt_tokens_details.cached_tokens > 700


def test_stop_string_equals_g3n_run(g3n, tiny, client, model_id):
    full = cli_answer(g3n, tiny, PROMPT, "--temperature", "0", "-n", "30")
    assert len(full) > 20, full
    stop = full[10:15]
    cut = cli_answer(g3n, tiny, PROMPT, "--temperature", "0", "-n", "30", "--stop", stop)
    assert cut == full[: full.index(stop)]
    for s in (stop, [stop, "never appears"]):
        r = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": PROMPT}],
                                           temperature=0, max_tokens=30, stop=s)
        assert r.choices[0].message.content == cut
        assert r.choices[0].finish_reason == "stop"


def test_streaming_chat(client, model_id):
    kwargs = dict(model=model_id, messages=[{"role": "user", "content": "Stream please"}], temperature=0,
                  max_tokens=12)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert len(chunks) >= 3
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    # include_usage: a last chunk with no choices and the usage
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_streaming_raw_sse_ends_with_done_and_usage(server, model_id):
    body = {"model": model_id, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "temperature": 0,
            "stream": True}
    status, headers, data = server.request("POST", "/v1/chat/completions", body)
    assert status == 200, data
    assert headers["content-type"].startswith("text/event-stream")
    events = sse_events(data)
    assert events[-1] == "[DONE]"
    assert data.endswith(b"data: [DONE]\n\n")
    last = json.loads(events[-2])
    assert last["choices"][0]["finish_reason"] in ("stop", "length")
    assert last["usage"]["completion_tokens"] >= 1  # usage rides on the last chunk even without stream_options
    assert all("usage" not in json.loads(e) for e in events[:-2])


def test_completions(g3n, tiny, client, model_id):
    # /v1/completions on the chat template's tokens answers what /v1/chat/completions answers.
    ids = g3n.run("tokenize", "-m", tiny, "--chat", PROMPT)
    assert ids.returncode == 0, ids.stderr
    prompt_ids = [int(t) for t in ids.stdout.replace(",", " ").split()]
    chat = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": PROMPT}],
                                          temperature=0, max_tokens=10)
    r = client.completions.create(model=model_id, prompt=prompt_ids, temperature=0, max_tokens=10)
    assert r.object == "text_completion"
    assert r.choices[0].text == chat.choices[0].message.content
    assert r.usage.prompt_tokens == len(prompt_ids)

    text = client.completions.create(model=model_id, prompt="Once upon a time", temperature=0, max_tokens=8)
    streamed = list(client.completions.create(model=model_id, prompt="Once upon a time", temperature=0, max_tokens=8,
                                              stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == text.choices[0].text
    assert text.usage.completion_tokens <= 8
    bos_ids = g3n.run("tokenize", "-m", tiny, "Once upon a time")
    assert text.usage.prompt_tokens == len(bos_ids.stdout.replace(",", " ").split())  # <bos> + the text


def test_conversation_reuses_the_cached_prefix(client, model_id):
    msgs = [{"role": "user", "content": "First question, rather long so that the prefix matters."}]
    first = client.chat.completions.create(model=model_id, messages=msgs, temperature=0, max_tokens=8)
    msgs += [{"role": "assistant", "content": first.choices[0].message.content},
             {"role": "user", "content": "And a follow-up?"}]
    second = client.chat.completions.create(model=model_id, messages=msgs, temperature=0, max_tokens=8)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= first.usage.prompt_tokens - 1, (cached, first.usage)


def _media_files(tmp: Path):
    import struct

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    img = tmp / "photo.png"
    Image.fromarray((rng.random((120, 160, 3)) * 255).astype(np.uint8)).save(img)
    t = np.arange(16000 * 2) / 16000
    x = (0.3 * np.sin(2 * np.pi * 330 * t)).astype("<f4").tobytes()
    wav = tmp / "tone.wav"
    wav.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(x)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 3, 1, 16000,
                    64000, 4, 32) + b"data" + struct.pack("<I", len(x)) + x)
    return img, wav


def test_image_and_audio_parts_equal_g3n_run(g3n, tiny, client, model_id, tmp_path):
    import base64

    img, wav = _media_files(tmp_path)
    expected = cli_answer(g3n, tiny, "What do you see and hear?", "--image", str(img), "--audio", str(wav),
                          "--temperature", "0", "-n", "6")
    parts = [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(img.read_bytes()).decode()}},
             {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav.read_bytes()).decode(), "format": "wav"}},
             {"type": "text", "text": "What do you see and hear?"}]
    msgs = [{"role": "user", "content": parts}]
    r = client.chat.completions.create(model=model_id, messages=msgs, temperature=0, max_tokens=6)
    assert r.choices[0].message.content == expected
    assert r.usage.prompt_tokens > 256 + 188
    # The same media again: the whole prompt but the last token comes from the slot's cache.
    again = client.chat.completions.create(model=model_id, messages=msgs, temperature=0, max_tokens=6)
    assert again.choices[0].message.content == expected
    assert again.usage.prompt_tokens_details.cached_tokens >= r.usage.prompt_tokens - 1
    # Another image at the same place: the cache is reused only up to the image, never past it.
    other = tmp_path / "other.png"
    from PIL import Image
    Image.new("RGB", (64, 64), (200, 10, 10)).save(other)
    parts[0] = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(other.read_bytes()).decode()}}
    third = client.chat.completions.create(model=model_id, messages=msgs, temperature=0, max_tokens=6)
    assert third.usage.prompt_tokens_details.cached_tokens < 16, third.usage
