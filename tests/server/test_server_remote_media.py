"""--allow-remote-media: http(s) image_url parts are downloaded (bounded, timed out, redirects followed) only when
the server is started with it; the image then counts exactly like the same bytes sent as a data: URI."""

from __future__ import annotations

import base64
import http.server
import threading

import numpy as np
import pytest

from server_harness import ServerProcess

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def files_server(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("www")
    Image.fromarray((np.random.default_rng(2).random((40, 60, 3)) * 255).astype(np.uint8)).save(d / "cat.png")
    (d / "notes.txt").write_text("not an image")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(d), **k)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", d
    httpd.shutdown()


@pytest.fixture(scope="module")
def remote_server(g3n, tiny):
    s = ServerProcess(g3n.path, tiny, "--allow-remote-media", threads=g3n.threads)
    c = openai.OpenAI(base_url=s.base_url + "/v1", api_key="x", max_retries=0, timeout=120)
    yield s, c
    c.close()
    s.stop_and_check()


def ask(client, url):
    return client.chat.completions.create(
        model="", temperature=0, max_tokens=6,
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                               {"type": "text", "text": "What is it?"}]}])


def test_remote_image_equals_data_uri(remote_server, files_server):
    _, client = remote_server
    base, d = files_server
    fetched = ask(client, base + "/cat.png")
    inline = ask(client, "data:image/png;base64," + base64.b64encode((d / "cat.png").read_bytes()).decode())
    assert fetched.choices[0].message.content == inline.choices[0].message.content
    assert fetched.usage.prompt_tokens == inline.usage.prompt_tokens > 256


def test_remote_failures_name_the_part(remote_server, files_server):
    _, client = remote_server
    base, _ = files_server
    for url, needle in [(base + "/missing.png", "HTTP 404"), (base + "/notes.txt", "messages[0].content[0]"),
                        ("ftp://example.com/x.png", "scheme"), ("http://127.0.0.1:9/x.png", "could not download")]:
        with pytest.raises(openai.BadRequestError) as e:
            ask(client, url)
        assert needle in str(e.value), (url, str(e.value))


def test_off_by_default(server, files_server):
    base, _ = files_server
    with openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0, timeout=60) as client:
        with pytest.raises(openai.BadRequestError) as e:
            ask(client, base + "/cat.png")
    assert "--allow-remote-media" in str(e.value)
