"""Malformed and hostile requests to `g3n serve`: each gets the right 4xx with an OpenAI error object
({"error": {"message", "type", "param", "code"}}), and the server keeps serving. Marked `badinput`: these also run
under the ASan + UBSan binary ($G3N_BIN), where a memory error ends the server and fails the test."""

from __future__ import annotations

import base64
import http.client
import json

import pytest

from server_harness import ServerProcess  # noqa: E402

pytestmark = pytest.mark.badinput

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "Hi"}]


def check_error(status, body, expect_status, param=None, needle=None):
    assert status == expect_status, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    if param is not None:
        assert err["param"] == param, err
    if needle is not None:
        assert needle.lower() in err["message"].lower(), err


def still_serving(server):
    status, body = server.get_json("/health")
    assert status == 200 and body["status"] == "ok", body
    status, _, body, raw = server.post_json(CHAT, {"messages": HI, "max_tokens": 2, "temperature": 0})
    assert status == 200, raw
    assert server.alive()


@pytest.mark.parametrize("body, param, needle", [
    (b"", None, "empty"),
    (b"{", None, "not valid JSON"),
    (b"[1, 2]", None, "JSON object"),
    (b"nul", None, "not valid JSON"),
    (b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', None, "UTF-8"),
    (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', None, "not valid JSON"),
    (b"[" * 10000 + b"]" * 10000, None, "deeper"),
    (b'{"a":' * 10000 + b"1" + b"}" * 10000, None, "deeper"),
    ({"messages": "Hi"}, "messages", "list"),
    ({}, "messages", "required"),
    ({"messages": []}, "messages", "empty"),
    ({"messages": [{"role": "user"}]}, "messages", "content"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages", "content"),
    ({"messages": [{"role": "assistant", "content": "first"}]}, "messages", "alternate"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages", None),
    ({"messages": [{"role": "user", "content": [{"type": "video", "video": "x"}]}]}, "messages", "unsupported type"),
    ({"messages": HI, "temperature": -1}, "temperature", "temperature must be"),
    ({"messages": HI, "temperature": "hot"}, "temperature", "number"),
    ({"messages": HI, "temperature": 1e300}, "temperature", "temperature must be"),
    (b'{"messages": [{"role": "user", "content": "Hi"}], "temperature": 1e400}', None, None),
    ({"messages": HI, "temperature": None, "top_p": -1e-30}, "top_p", "top_p must be"),
    ({"messages": HI, "top_p": 2}, "top_p", "top_p must be"),
    ({"messages": HI, "top_p": 0}, "top_p", "top_p must be"),
    ({"messages": HI, "top_k": -3}, "top_k", "top_k"),
    ({"messages": HI, "top_k": 1.5}, "top_k", "integer"),
    ({"messages": HI, "min_p": 1.5}, "min_p", "min_p must be"),
    ({"messages": HI, "presence_penalty": 3}, "presence_penalty", "presence_penalty must be"),
    ({"messages": HI, "frequency_penalty": -2.5}, "frequency_penalty", "frequency_penalty must be"),
    ({"messages": HI, "repetition_penalty": 0}, "repetition_penalty", "repetition_penalty must be"),
    ({"messages": HI, "max_tokens": 0}, "max_tokens", "at least 1"),
    ({"messages": HI, "max_tokens": "5"}, "max_tokens", "integer"),
    ({"messages": HI, "max_completion_tokens": -1}, "max_completion_tokens", "at least 1"),
    ({"messages": HI, "max_tokens": 10 ** 30}, "max_tokens", None),
    ({"messages": HI, "seed": "x"}, "seed", "integer"),
    ({"messages": HI, "stop": 5}, "stop", "string"),
    ({"messages": HI, "stop": ["a", 1]}, "stop", "string"),
    ({"messages": HI, "stop": [""]}, "stop", "empty"),
    ({"messages": HI, "stream": "yes"}, "stream", "boolean"),
    ({"messages": HI, "stream_options": 3}, "stream_options", "object"),
    ({"messages": HI, "n": 2}, "n", "n > 1"),
    ({"messages": HI, "n": 0}, "n", "at least 1"),
    ({"messages": HI, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "tools"),
    ({"messages": HI, "response_format": {"type": "json_object"}}, "response_format", "response_format"),
    ({"messages": HI, "n": 3, "tools": [{"type": "function"}], "logprobs": True}, "n", "tools"),
    ({"messages": HI, "logit_bias": {"5": 10}}, "logit_bias", "logit_bias"),
    ({"messages": HI, "model": 7}, "model", "string"),
])
def test_bad_chat_requests_get_400(server, body, param, needle):
    status, _, parsed, raw = server.post_json(CHAT, body)
    check_error(status, parsed, 400, param, needle)
    assert server.alive()


def test_server_still_serves_after_bad_requests(server):
    still_serving(server)


def test_unknown_model_is_404(server):
    status, _, body, _ = server.post_json(CHAT, {"model": "gpt-4o", "messages": HI})
    check_error(status, body, 404, "model", "gpt-4o")
    assert body["error"]["code"] == "model_not_found"
    status, _, data = server.request("GET", "/v1/models/gpt-4o")
    check_error(status, json.loads(data), 404)
    status, _, data = server.request("GET", "/no/such/endpoint")
    check_error(status, json.loads(data), 404)


def test_images_and_audio(server):
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
    def user(part):
        return {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}]}
    cases = [
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64," + png}}, "corrupt PNG"),
        ({"type": "input_audio", "input_audio": {"data": base64.b64encode(b"RIFF0000WAVE").decode(), "format": "wav"}},
         "not a readable audio file"),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"hello").decode()}},
         "messages[0].content[1]"),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@not*base64!!"}}, "base64"),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD="}}, "base64"),
        ({"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}, "base64"),
        ({"type": "image_url", "image_url": {"url": "http://example.com/cat.png"}}, "data: URI"),
        ({"type": "image_url", "image_url": {"url": "data:image/png,rawtext"}}, "base64"),
        ({"type": "image_url"}, "image_url"),
    ]
    for part, needle in cases:
        status, _, body, raw = server.post_json(CHAT, user(part))
        check_error(status, body, 400, "messages[0].content[1]", needle)
    still_serving(server)


def test_prompt_beyond_the_context(server):
    status, body = server.get_json("/v1/models")
    context = body["data"][0]["context_length"]
    long = {"messages": [{"role": "user", "content": "word " * (context + 10)}]}
    status, _, body, _ = server.post_json(CHAT, long)
    check_error(status, body, 400, "messages", "context")
    assert str(context) in body["error"]["message"]
    assert body["error"]["code"] == "context_length_exceeded"
    status, _, body, _ = server.post_json(CHAT, {"messages": HI, "max_tokens": context})
    check_error(status, body, 400, "max_tokens", "context")
    assert str(context) in body["error"]["message"] and f"asks for {context}" in body["error"]["message"]
    status, _, body, _ = server.post_json("/v1/completions", {"prompt": "word " * (context + 10), "max_tokens": 1})
    check_error(status, body, 400, "prompt", "context")
    still_serving(server)


@pytest.mark.parametrize("body, param", [
    ({}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": [1, -2]}, "prompt"),
    ({"prompt": [1, 10 ** 9]}, "prompt"),
    ({"prompt": "x", "echo": True}, "echo"),
    ({"prompt": "x", "best_of": 2}, "best_of"),
    ({"prompt": "x", "logprobs": 3}, "logprobs"),
    ({"prompt": "x", "suffix": "y"}, "suffix"),
    ({"prompt": "x", "temperature": -0.5}, "temperature"),
])
def test_bad_completions_get_400(server, body, param):
    status, _, parsed, _ = server.post_json("/v1/completions", body)
    check_error(status, parsed, 400, param)


def test_body_over_the_limit_is_413(server):
    big = b'{"messages": [{"role": "user", "content": "' + b"a" * (50 << 20) + b'"}]}'
    status, _, data = server.request("POST", CHAT, big, headers={"Content-Type": "application/json"})
    check_error(status, json.loads(data), 413, None, "limit")
    # The same without a Content-Length (chunked): cut off while reading.
    conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
    try:
        conn.putrequest("POST", CHAT)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        chunk = b"a" * (1 << 20)
        try:
            for _ in range(20):
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        except OSError:
            pass  # the server may stop reading once the limit is passed
        r = conn.getresponse()
        check_error(r.status, json.loads(r.read()), 413)
    finally:
        conn.close()
    still_serving(server)


def test_oversized_headers_and_garbage(server):
    for raw in (b"GARBAGE\r\n\r\n", b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
                b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n"):
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        try:
            conn.connect()
            conn.sock.sendall(raw)
            conn.sock.settimeout(30)
            reply = conn.sock.recv(65536)
            assert reply == b"" or reply.startswith(b"HTTP/1.1 4"), reply[:200]
        finally:
            conn.close()
    still_serving(server)


@pytest.fixture(scope="module")
def keyed(g3n, tiny):
    s = ServerProcess(g3n.path, tiny, "--api-key", "sekrit", "--max-body-bytes", "4096", threads=1)
    yield s
    s.stop_and_check()


def test_api_key(keyed):
    ok = {"Authorization": "Bearer sekrit"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekrit"}, {"Authorization": "Bearer "}):
        status, _, body, _ = keyed.post_json(CHAT, {"messages": HI, "max_tokens": 2}, headers=headers)
        check_error(status, body, 401, None, "API key")
        status, _, data = keyed.request("GET", "/v1/models", headers=headers)
        check_error(status, json.loads(data), 401)
        status, _, data = keyed.request("GET", "/metrics", headers=headers)
        assert status == 401
    status, body = keyed.get_json("/health")  # stays open
    assert status == 200 and body["status"] == "ok"
    status, _, body, raw = keyed.post_json(CHAT, {"messages": HI, "max_tokens": 2}, headers=ok)
    assert status == 200, raw
    status, _, data = keyed.request("GET", "/v1/models", headers=ok)
    assert status == 200
    # --max-body-bytes
    status, _, body, _ = keyed.post_json(CHAT, {"messages": [{"role": "user", "content": "x" * 5000}]}, headers=ok)
    check_error(status, body, 413, None, "4096")
    openai = pytest.importorskip("openai")
    with openai.OpenAI(base_url=keyed.base_url + "/v1", api_key="wrong", max_retries=0, timeout=60) as c:
        with pytest.raises(openai.AuthenticationError):
            c.models.list()
    with openai.OpenAI(base_url=keyed.base_url + "/v1", api_key="sekrit", max_retries=0, timeout=60) as c:
        assert c.models.list().data


def test_serve_refuses_bad_options(g3n, tiny):
    for args, needle in ((["--parallel", "0"], "parallel"), (["--port", "70000"], "port"),
                         (["--max-body-bytes", "5"], "max-body-bytes")):
        p = g3n.run("serve", "-m", tiny, *args, timeout=60)
        assert p.returncode != 0 and needle in (p.stderr + p.stdout), (args, p.stderr)
    p = g3n.run("serve", "-m", "/nonexistent/model", "--port", "0", timeout=60)
    assert p.returncode != 0 and "does not exist" in p.stderr, p.stderr
    # Off loopback without a key: a warning. 192.0.2.1 (TEST-NET-1) is no address of this machine, so nothing
    # is ever bound outside loopback; the bind fails with a clear error after the warning.
    p = g3n.run("serve", "-m", tiny, "--host", "192.0.2.1", "--port", "0", "-t", "1", timeout=120)
    assert p.returncode != 0, p.stderr
    assert "warning" in p.stderr and "without --api-key" in p.stderr, p.stderr
    assert "cannot listen" in p.stderr, p.stderr
