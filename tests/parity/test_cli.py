"""The text CLI end to end, through the real binary, on a random checkpoint from `g3n make-random`.

- `run` streams its answer (text arrives before the process ends) and stops at <end_of_turn> / <eos>;
- a two-turn `chat` gives the same second answer as one `run` over the whole conversation (the KV cache
  kept between turns is exact);
- bad arguments and a missing model directory give a clear error and a non-zero exit.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file


@pytest.fixture(scope="session")
def tiny(g3n, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "model"
    p = g3n.run("make-random", "--preset", "tiny", "--modalities", "text", "--out", out, "--seed", "5")
    assert p.returncode == 0, p.stderr
    return out


@pytest.fixture(scope="session")
def stopper(tiny, tmp_path_factory) -> Path:
    """The tiny model rewired so that its first answer token is always <end_of_turn> (106) or <eos> (1):
    the final norm keeps one hidden dimension d, and only rows 106 (+s) and 1 (-s) of the tied embedding read
    it, so whatever the sign of the hidden state at d, a stop token has the largest logit."""
    out = tmp_path_factory.mktemp("stopper") / "model"
    out.mkdir()
    for f in tiny.iterdir():
        if f.name != "model.safetensors":
            (out / f.name).write_bytes(f.read_bytes())
    t = load_file(tiny / "model.safetensors")
    emb = t["model.embed_tokens.weight"].clone()
    d = 0
    emb[:, d] = 0.0
    emb[106, d] = 1.0
    emb[1, d] = -1.0
    norm = torch.zeros_like(t["model.norm.weight"])
    norm[d] = 1.0
    t["model.embed_tokens.weight"] = emb
    t["model.norm.weight"] = norm
    save_file(t, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def test_run_streams_text_before_it_ends(g3n, tiny):
    proc = subprocess.Popen(
        [str(g3n.path), "run", "-m", str(tiny), "Tell me a story.", "-n", "400", "--temperature", "0", "-t", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    first = proc.stdout.read(1)  # blocks until the first byte is written
    running_after_first_byte = proc.poll() is None
    rest, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode(errors="replace")
    assert first, "no output"
    assert running_after_first_byte, "the whole answer came out only when the program ended: not streamed"
    assert len(first + rest) > 1


def test_run_stops_at_a_stop_token(g3n, stopper):
    gen = g3n.run("generate", "-m", stopper, "--prompt", "Hello", "--chat", "-n", "1")
    assert gen.returncode == 0, gen.stderr
    assert int(gen.stdout.split()[0]) in (1, 106)
    p = g3n.run("run", "-m", stopper, "Hello", "-n", "50", "--temperature", "0", "-v")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "\n", repr(p.stdout)  # nothing before the stop token, then the line end
    assert "finish: stop" in p.stderr, p.stderr


def test_run_is_repeatable_with_a_seed(g3n, tiny):
    a = g3n.run("run", "-m", tiny, "Hi there", "-n", "24", "--seed", "11")
    b = g3n.run("run", "-m", tiny, "Hi there", "-n", "24", "--seed", "11")
    c = g3n.run("run", "-m", tiny, "Hi there", "-n", "24", "--seed", "12")
    assert a.returncode == b.returncode == c.returncode == 0, a.stderr + c.stderr
    assert a.stdout == b.stdout
    assert a.stdout != c.stdout


def test_two_turn_chat_equals_one_run_over_the_conversation(g3n, tiny, tmp_path):
    common = ["-m", str(tiny), "-n", "12", "--temperature", "0", "-s", "Be brief."]
    first = g3n.run("run", *common, "Hello there")
    assert first.returncode == 0, first.stderr
    answer1 = first.stdout[:-1]

    chat = subprocess.run(
        [str(g3n.path), "chat", *common, "-v"], input="Hello there\nAnd then?\n", capture_output=True, text=True,
        timeout=300,
    )
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.startswith(first.stdout), (chat.stdout, first.stdout)
    # The second turn reused the cached conversation instead of prefilling it again.
    stats = [line for line in chat.stderr.splitlines() if "reused from the cache" in line]
    assert len(stats) == 2, chat.stderr
    reused = int(stats[1].split("(")[1].split()[0])
    assert reused > 10, stats[1]

    conv = tmp_path / "conv.json"
    conv.write_text(json.dumps([
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": answer1},
        {"role": "user", "content": "And then?"},
    ]))
    whole = g3n.run("run", *common, "--messages", conv)
    assert whole.returncode == 0, whole.stderr
    assert chat.stdout == first.stdout + whole.stdout


def test_chat_reset_starts_over(g3n, tiny):
    common = ["-m", str(tiny), "-n", "8", "--temperature", "0"]
    one = g3n.run("run", *common, "Hi")
    chat = subprocess.run([str(g3n.path), "chat", *common], input="Something else\n/reset\nHi\n/exit\nignored\n",
                          capture_output=True, text=True, timeout=300)
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.endswith(one.stdout)


@pytest.mark.badinput
@pytest.mark.parametrize("args, needle", [
    (["run", "-m", "/nonexistent/model", "hi"], "does not exist"),
    (["run", "hi"], "--model"),
    (["run", "-m", "{tiny}"], "prompt"),
    (["run", "-m", "{tiny}", "hi", "--temperature", "-1"], "temperature"),
    (["run", "-m", "{tiny}", "hi", "--top-p", "2"], "top_p"),
    (["run", "-m", "{tiny}", "hi", "-n", "0"], "max-new-tokens"),
    (["run", "-m", "{tiny}", "hi", "--messages", "/nonexistent.json"], ""),
    (["score", "-m", "{tiny}", "--ids", "1,x,3", "--out", "/tmp/x.npy"], "not a token id"),
    (["score", "-m", "{tiny}", "--ids", "1,99999999", "--out", "/tmp/x.npy"], "outside the vocabulary"),
    (["generate", "-m", "{tiny}", "-n", "3"], "--ids"),
    (["chat", "-m", "/nonexistent/model"], "does not exist"),
    (["nonsense-command"], ""),
])
def test_bad_arguments_fail_clearly(g3n, tiny, args, needle):
    args = [a.replace("{tiny}", str(tiny)) for a in args]
    p = g3n.run(*args)
    assert p.returncode > 0, (args, p.returncode)
    msg = p.stderr + p.stdout
    assert needle.lower() in msg.lower(), msg


def test_context_limit_is_a_clear_message(g3n, tiny, tmp_path):
    cfg = json.loads((tiny / "config.json").read_text())
    small = tmp_path / "small"
    small.mkdir()
    for f in tiny.iterdir():
        (small / f.name).symlink_to(f)
    (small / "config.json").unlink()
    cfg["max_position_embeddings"] = 40
    (small / "config.json").write_text(json.dumps(cfg))
    long = g3n.run("run", "-m", small, "word " * 100)
    assert long.returncode > 0 and "context" in long.stderr, long.stderr
    near = g3n.run("run", "-m", small, "Hi", "-n", "100", "--temperature", "0")
    assert near.returncode == 0, near.stderr
    assert "context" in near.stderr, near.stderr


def test_stop_string_cuts_the_answer(g3n, tiny):
    common = ["-m", str(tiny), "-n", "40", "--temperature", "0"]
    full = g3n.run("run", *common, "Tell me more.")
    assert full.returncode == 0, full.stderr
    text = full.stdout[:-1]
    assert len(text) > 20, text
    stop = text[12:17]  # a stop string that appears mid-answer (possibly spanning tokens)
    cut = g3n.run("run", *common, "Tell me more.", "--stop", stop, "-v")
    assert cut.returncode == 0, cut.stderr
    assert cut.stdout == text[: text.index(stop)] + "\n"
    assert "finish: stop" in cut.stderr
