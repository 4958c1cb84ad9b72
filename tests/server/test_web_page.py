"""The chat page at / (src/server/web/index.html.inc) in headless Chromium, against the real `g3n serve` on the tiny
random multimodal checkpoint: a typed prompt streams an answer (the same text the API gives), Markdown is rendered
safely, an uploaded image and a recorded-audio stand-in (Chromium's fake microphone) reach the model (the server's
prompt token count grows by the media's soft tokens), pasted images and audio files are attached as they are and
can be removed, the transcription box shows what /v1/audio/transcriptions and /translations answer, the profile
selector appears only when /v1/models lists more than one model (a server with a MatFormer --profile) and picks the
size, and a refused request shows the error and gives the message back. Screenshots are saved as test artifacts
($G3N_ARTIFACTS/web_page, or pytest's tmp dir); their paths are printed.

Needs Debian's `chromium` and `chromium-driver` and pip's `selenium`; skipped without them unless
G3N_REQUIRE_BROWSER=1. G3N_CHROMIUM / G3N_CHROMEDRIVER point at other binaries.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import time
import zlib
from pathlib import Path

import pytest

from g3n_harness import _flag
from server_harness import ServerProcess

IMAGE_TOKENS = 256  # soft tokens per image
AUDIO_TOKENS = 188  # soft tokens per audio clip (30 s or less)
PROMPT = "Hello from the page"
TIMEOUT = 180.0

# Records every fetch the page makes (and the answers of /v1/audio/*); with sessionStorage "g3n-test-extra-model"
# set, /v1/models lists one more model, one the server does not have.
FETCH_HOOK = r"""
window.__requests = [];
const realFetch = window.fetch.bind(window);
window.fetch = async function (url, opts) {
  const body = opts && opts.body;
  const entry = { url: String(url), json: typeof body === "string" ? body : null,
                  form: body instanceof FormData ? [...body.keys()] : null, response: null };
  window.__requests.push(entry);
  const r = await realFetch(url, opts);
  if (entry.url.startsWith("/v1/audio/")) entry.response = await r.clone().text();
  const extra = sessionStorage.getItem("g3n-test-extra-model");
  if (String(url) === "/v1/models" && extra && r.ok) {
    const j = await r.json();
    j.data.push(Object.assign({}, j.data[0], { id: extra }));
    return new Response(JSON.stringify(j), { status: 200, headers: { "Content-Type": "application/json" } });
  }
  return r;
};
"""


def test_page_is_served(server):
    status, headers, data = server.request("GET", "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    page = data.decode()
    assert page.lstrip().lower().startswith("<!doctype html>")
    for needle in ("/v1/chat/completions", "/v1/models", "/v1/audio/", "getReader", "tokens/s", "image_url",
                   "input_audio", "getUserMedia", "AudioWorklet"):
        assert needle in page, needle
    assert "not available in this build" not in page
    # Self-contained: nothing loaded from elsewhere.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"""@import|url\(\s*["']?(https?:)?//""", page)


# ---- the browser -------------------------------------------------------------------------------------------------

def _which(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env] if os.access(os.environ[env], os.X_OK) else None
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    return None


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    d = Path(os.environ["G3N_ARTIFACTS"]) / "web_page" if os.environ.get("G3N_ARTIFACTS") else \
        tmp_path_factory.mktemp("web_page")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    def unavailable(msg: str):
        if _flag("G3N_REQUIRE_BROWSER"):
            pytest.fail(msg + " (G3N_REQUIRE_BROWSER is set)")
        pytest.skip(msg)

    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("the browser test needs selenium (pip install selenium)")
    chromium = _which("G3N_CHROMIUM", "chromium", "chromium-browser", "google-chrome")
    chromedriver = _which("G3N_CHROMEDRIVER", "chromedriver")
    if not chromium or not chromedriver:
        unavailable("the browser test needs Chromium and its driver (sudo apt-get install chromium chromium-driver)")

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000",
              "--no-first-run", "--disable-extensions", "--disable-background-networking",
              "--autoplay-policy=no-user-gesture-required",
              # a fake microphone (a beep) granted without asking: the recorded-audio stand-in
              "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
              "--user-data-dir=" + str(tmp_path_factory.mktemp("chromium-profile"))):
        opts.add_argument(a)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        opts.add_argument("--no-sandbox")  # Chromium's sandbox refuses to run as root (containers, CI)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        d = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    except WebDriverException as e:
        pytest.fail(f"cannot start headless Chromium ({chromium}, {chromedriver}): {e.msg}")
    d.set_script_timeout(60)
    d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": FETCH_HOOK})
    yield d
    d.quit()


class Page:
    def __init__(self, driver, server, artifacts: Path, request):
        self.d, self.server, self.artifacts, self.request = driver, server, artifacts, request

    def open(self) -> None:
        self.d.get(self.server.base_url + "/")
        self.d.execute_script("localStorage.clear()")
        self.d.get(self.server.base_url + "/")
        self.wait(lambda: self.js("return document.getElementById('model').options.length") > 0, "the model list")
        # Greedy and short, so the answers can be compared with the API's.
        self.js("document.getElementById('temperature').value = '0'; document.getElementById('max_tokens').value = '8';")

    def js(self, script: str, *args):
        return self.d.execute_script(script, *args)

    def el(self, css: str):
        from selenium.webdriver.common.by import By
        return self.d.find_element(By.CSS_SELECTOR, css)

    def els(self, css: str):
        from selenium.webdriver.common.by import By
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def screenshot(self, name: str) -> Path:
        p = self.artifacts / f"{name}.png"
        self.d.save_screenshot(str(p))
        line = f"web page screenshot: {p}"
        print(line)
        # Shown even when pytest captures output: the path of the artifact.
        plugins = self.request.config.pluginmanager
        tr, cap = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
        if tr is not None and cap is not None:
            with cap.global_and_fixture_disabled():
                tr.ensure_newline()
                tr.write_line(line)
        return p

    def console(self) -> list[str]:
        return [f"{e['level']}: {e['message']}" for e in self.d.get_log("browser")]

    def wait(self, cond, what: str, timeout: float = TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            v = cond()
            if v:
                return v
            if time.monotonic() > deadline:
                shot = self.screenshot("failure-" + re.sub(r"\W+", "-", self.request.node.name))
                pytest.fail(f"waited {timeout:.0f}s for {what}; screenshot {shot}\nnote: {self.el('#note').text}\n"
                            f"console: {self.console()}\nserver: {self.server.stderr()[-2000:]}")
            time.sleep(0.1)

    def requests(self) -> list[dict]:
        return self.js("return window.__requests")

    def last_chat_request(self) -> dict:
        reqs = [r for r in self.requests() if r["url"] == "/v1/chat/completions"]
        assert reqs, "the page sent no chat request"
        return json.loads(reqs[-1]["json"])

    def send(self, text: str) -> dict:
        """Types `text`, presses Enter, waits for the answer to finish; returns {text, stats, error}."""
        from selenium.webdriver.common.keys import Keys
        n = len(self.els(".msg.assistant"))
        box = self.el("#input")
        box.send_keys(text)
        box.send_keys(Keys.ENTER)
        self.wait(lambda: len(self.els(".msg.assistant")) > n, "the answer to appear")
        self.wait(lambda: self.el("#stop").get_attribute("disabled") is not None, "the answer to finish")
        msg = self.els(".msg.assistant")[-1]
        return {"text": msg.find_element("css selector", ".body").text,
                "stats": msg.find_element("css selector", ".stats").text,
                "error": "error" in msg.get_attribute("class")}

    def new_chat(self) -> None:
        self.el("#new").click()
        self.wait(lambda: not self.els(".msg"), "the log to clear")


def check_console(p: Page) -> None:
    severe = [m for m in p.console() if m.startswith("SEVERE") and "404 (Not Found)" not in m]
    assert not severe, f"console errors: {severe}"


@pytest.fixture
def page(driver, server, artifacts, request):
    p = Page(driver, server, artifacts, request)
    p.open()
    yield p
    check_console(p)


@pytest.fixture(scope="module")
def profiled(g3n, tiny):
    """A server with a second (MatFormer) size: /v1/models lists two models."""
    s = ServerProcess(g3n.path, tiny, "--parallel", "1", "--profile", "small=skip=4;ffn=128", threads=g3n.threads)
    yield s
    s.stop_and_check()


def api_answer(server, content, max_tokens: int = 8, model: str | None = None) -> str:
    model = model or server.get_json("/v1/models")[1]["data"][0]["id"]
    status, _, j, raw = server.post_json("/v1/chat/completions", {
        "model": model, "messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": max_tokens})
    assert status == 200, raw
    return j["choices"][0]["message"]["content"]


def prompt_tokens(server) -> float:
    return server.metrics()["g3n_prompt_tokens_total"]


def write_png(path: Path, w: int = 96, h: int = 64) -> Path:
    rows = b"".join(b"\x00" + bytes(((x * 7 + y * 3) % 256, (x * 2) % 256, (y * 5) % 256)[c]
                                    for x in range(w) for c in range(3)) for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
                     chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def write_wav(path: Path, seconds: float = 1.5, freq: float = 440.0) -> Path:
    import math
    n = int(16000 * seconds)
    pcm = struct.pack(f"<{n}h", *(int(8000 * math.sin(2 * math.pi * freq * i / 16000)) for i in range(n)))
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt " +
                     struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16) + b"data" + struct.pack("<I", len(pcm)) + pcm)
    return path


def parse_wav(data: bytes) -> dict:
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt ", data[:16]
    fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[20:36])
    assert data[36:40] == b"data"
    (size,) = struct.unpack("<I", data[40:44])
    assert size == len(data) - 44
    samples = struct.unpack(f"<{size // 2}h", data[44:])
    return {"format": fmt, "channels": channels, "rate": rate, "bits": bits, "seconds": len(samples) / rate,
            "peak": max(map(abs, samples), default=0)}


# ---- the tests -----------------------------------------------------------------------------------------------------

def test_typed_prompt_streams_an_answer(page, server):
    t0 = time.monotonic()
    # One model: no selector, its name shown instead.
    assert not page.el("#model-box").is_displayed()
    model = server.get_json("/v1/models")[1]["data"][0]["id"]
    assert page.el("#model-name").text.startswith(model)

    out = page.send(PROMPT)
    assert not out["error"], out
    assert "tokens/s" in out["stats"] and "first token" in out["stats"], out["stats"]
    body = page.last_chat_request()
    assert body["stream"] is True and body["model"] == model
    assert body["messages"] == [{"role": "user", "content": PROMPT}]
    expected = api_answer(server, PROMPT)
    assert page.js("return turns") == [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": expected}]
    assert page.el(".msg.user .body").text == PROMPT

    md = page.js("return markdown(arguments[0])",
                 "**bold** and `a<b>` here\n\n- one\n- two\n\n1. first\n\n```js\n<script>alert(1)</script>\n```\n"
                 "<img src=x onerror=alert(1)>")
    assert "<strong>bold</strong>" in md and "<code>a&lt;b&gt;</code>" in md
    assert "<ul><li>one</li><li>two</li></ul>" in md and "<ol><li>first</li></ol>" in md
    assert "<pre><code>&lt;script&gt;alert(1)&lt;/script&gt;</code></pre>" in md
    assert "<script>" not in md and "<img" not in md  # everything the model writes is escaped
    page.screenshot("chat")
    print(f"chat test: {time.monotonic() - t0:.1f}s")


def test_uploaded_image_and_recorded_audio_reach_the_model(page, server, tmp_path):
    png = write_png(tmp_path / "picture.png")
    page.el("#imagefile").send_keys(str(png))
    page.wait(lambda: page.els("#tray .chip.image img"), "the image thumbnail")

    before = prompt_tokens(server)
    out = page.send("What is in the picture?")
    assert not out["error"], out
    grew = prompt_tokens(server) - before
    assert grew > IMAGE_TOKENS, grew
    assert not page.els("#tray .chip")  # the attachment went with the message
    assert page.els(".msg.user .media img")
    content = page.last_chat_request()["messages"][-1]["content"]
    assert content[0] == {"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()}}  # the file as it is
    assert content[1] == {"type": "text", "text": "What is in the picture?"}

    # The microphone (Chromium's fake device): record ~2 s, stop, and send it with the next message.
    mic = page.el("#mic")
    mic.click()
    page.wait(lambda: "rec" in mic.get_attribute("class") and page.js("return (recorder.length || 0) > 0"),
              "the recording to start")
    time.sleep(1.5)
    page.screenshot("recording")
    mic.click()
    page.wait(lambda: page.els("#tray .chip.audio"), "the recording to be attached")
    item = page.js("return tray[0]")
    assert item["kind"] == "audio" and item["format"] == "wav"
    wav = parse_wav(base64.b64decode(item["data"]))
    assert (wav["format"], wav["channels"], wav["rate"], wav["bits"]) == (1, 1, 16000, 16), wav
    assert 1.0 < wav["seconds"] < 10.0, wav
    assert wav["peak"] > 100, wav  # the fake device beeps: not silence
    assert page.js("return recorder.kind") == "AudioWorklet"

    before = prompt_tokens(server)
    out = page.send("What do you hear?")
    assert not out["error"], out
    grew = prompt_tokens(server) - before
    assert grew > IMAGE_TOKENS + AUDIO_TOKENS, grew  # the conversation so far (with the image), and the audio
    messages = page.last_chat_request()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"][0]["type"] == "image_url"
    assert messages[2]["content"][0] == {"type": "input_audio", "input_audio": {"data": item["data"], "format": "wav"}}
    assert messages[2]["content"][1] == {"type": "text", "text": "What do you hear?"}
    assert page.els(".msg.user .media audio")
    page.screenshot("image-and-audio")


PASTE_IMAGE = """
const c = document.createElement("canvas");
c.width = 40; c.height = 30;
const g = c.getContext("2d");
g.fillStyle = "#c03"; g.fillRect(0, 0, 40, 30); g.fillStyle = "#09f"; g.fillRect(10, 5, 20, 20);
c.toBlob((blob) => {
  const dt = new DataTransfer();
  dt.items.add(new File([blob], "image.png", { type: "image/png" }));
  document.getElementById("input").dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }));
}, "image/png");
"""


def test_attachments_paste_remove_and_audio_files_go_as_they_are(page, tmp_path):
    page.js(PASTE_IMAGE)  # Ctrl+V of an image
    page.wait(lambda: page.els("#tray .chip.image"), "the pasted image's chip")
    assert page.js("return tray[0].url").startswith("data:image/png;base64,")
    assert page.el("#input").get_attribute("value") == ""  # the paste did not land in the text box
    wav = write_wav(tmp_path / "tone.wav")
    page.el("#audiofile").send_keys(str(wav))
    page.wait(lambda: page.els("#tray .chip.audio"), "the audio chip")
    item = page.js("return tray[1]")
    assert item["format"] == "wav" and base64.b64decode(item["data"]) == wav.read_bytes()
    assert "tone.wav" in page.el("#tray .chip.audio").text
    page.screenshot("attachments")
    page.el("#tray .chip.audio .x").click()
    page.wait(lambda: not page.els("#tray .chip.audio"), "the audio chip to go")
    assert page.js("return tray.map(t => t.kind)") == ["image"]
    page.el("#tray .chip.image .x").click()
    page.wait(lambda: not page.els("#tray .chip"), "the image chip to go")
    assert page.js("return tray.length") == 0


def test_transcription_box(page, tmp_path):
    page.el("#tr-toggle").click()
    assert page.el("#tr").is_displayed()
    assert page.el("#tr-run").get_attribute("disabled") is not None  # nothing to transcribe yet

    # A recording lands in the box; this one through the ScriptProcessor path (browsers without AudioWorklet).
    page.js("window.AudioWorkletNode = undefined")
    rec = page.el("#tr-rec")
    rec.click()
    page.wait(lambda: "rec" in rec.get_attribute("class") and page.js("return (recorder.length || 0) > 0"),
              "the recording to start")
    time.sleep(1.0)  # long enough to catch a beep of the fake device
    rec.click()
    page.wait(lambda: "recording.wav" in page.el("#tr-clip").text, "the recording to be chosen")
    recorded = page.d.execute_async_script("readDataUrl(trClip.blob).then(arguments[arguments.length - 1])")
    wav = parse_wav(base64.b64decode(recorded.split(",", 1)[1]))
    assert (wav["channels"], wav["rate"], wav["bits"]) == (1, 16000, 16) and wav["seconds"] > 0.3, wav
    assert wav["peak"] > 100, wav
    assert page.js("return recorder.kind") == "ScriptProcessor"

    # A file, transcribed and translated: the box shows what the server answered (its answers themselves are
    # checked against `g3n transcribe` in test_server_audio.py).
    wav = write_wav(tmp_path / "speech.wav", seconds=2.0, freq=220.0)
    page.el("#tr-file").send_keys(str(wav))
    page.wait(lambda: "speech.wav" in page.el("#tr-clip").text, "the file to be chosen")
    from selenium.webdriver.support.ui import Select
    for task, fmt in (("transcriptions", "text"), ("translations", "json")):
        Select(page.el("#tr-task")).select_by_value(task)
        Select(page.el("#tr-format")).select_by_value(fmt)
        page.el("#tr-run").click()
        page.wait(lambda: re.match(r"(Done|Error|Cancelled)", page.el("#tr-status").text), f"the {task} answer")
        status = page.el("#tr-status").text
        assert status.startswith("Done"), status
        req = [r for r in page.requests() if r["url"] == "/v1/audio/" + task][-1]
        assert req["form"] == ["file", "model", "response_format"], req
        expected = req["response"] if fmt == "text" else json.loads(req["response"])["text"]
        assert page.js("return document.getElementById('tr-out').textContent") == expected
    page.screenshot("transcription")


def test_profile_selector_picks_the_size(driver, profiled, artifacts, request):
    page = Page(driver, profiled, artifacts, request)
    page.open()
    ids = [m["id"] for m in profiled.get_json("/v1/models")[1]["data"]]
    assert len(ids) == 2
    assert page.el("#model-box").is_displayed() and not page.el("#model-name").text
    assert page.js("return [...document.getElementById('model').options].map(o => o.value)") == ids
    from selenium.webdriver.support.ui import Select
    answers = {}
    for model in (ids[1], ids[0], ids[1]):  # the small size, the full model, the small one again
        Select(page.el("#model")).select_by_value(model)
        page.new_chat()
        out = page.send(PROMPT)
        assert not out["error"], out
        assert page.last_chat_request()["model"] == model
        answers.setdefault(model, page.js("return turns")[-1]["content"])
        assert page.js("return turns")[-1]["content"] == answers[model]
        assert page.el(".msg.assistant .role").text.lower() == model.lower()
        if model == ids[1] and len(answers) == 1:
            page.screenshot("profiles")
    for model in ids:
        assert answers[model] == api_answer(profiled, PROMPT, model=model), model
    assert answers[ids[0]] != answers[ids[1]]
    check_console(page)


def test_an_error_is_shown_and_the_message_goes_back(page, server, tmp_path):
    # /v1/models (stubbed in the page) lists a model this server does not have.
    page.js("sessionStorage.setItem('g3n-test-extra-model', 'gemma-3n-E2B-test')")
    try:
        page.open()
        assert page.el("#model-box").is_displayed()
        options = page.js("return [...document.getElementById('model').options].map(o => o.value)")
        real = server.get_json("/v1/models")[1]["data"][0]["id"]
        assert options == [real, "gemma-3n-E2B-test"]
        from selenium.webdriver.support.ui import Select
        Select(page.el("#model")).select_by_value("gemma-3n-E2B-test")
        page.el("#imagefile").send_keys(str(write_png(tmp_path / "p.png")))
        page.wait(lambda: page.els("#tray .chip.image"), "the image chip")
        out = page.send("hi")
        # The request names the chosen model; this server does not have it, and the page says so.
        assert page.last_chat_request()["model"] == "gemma-3n-E2B-test"
        assert out["error"] and "gemma-3n-E2B-test" in out["text"], out
        # The text and the attachment go back to the composer; the turn did not happen.
        assert page.el("#input").get_attribute("value") == "hi"
        assert page.js("return tray.map(t => t.kind)") == ["image"]
        assert page.js("return turns") == []
        page.screenshot("error")
        Select(page.el("#model")).select_by_value(real)
        page.el("#input").clear()
        assert not page.send(PROMPT)["error"]
        assert page.last_chat_request()["model"] == real
    finally:
        page.js("sessionStorage.removeItem('g3n-test-extra-model'); localStorage.clear()")
