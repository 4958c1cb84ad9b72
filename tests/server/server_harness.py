"""Starting `g3n serve` on a free loopback port and talking HTTP to it (standard library only; the tests
use the official `openai` package on top)."""

from __future__ import annotations

import http.client
import json
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

START_TIMEOUT = 120.0  # an ASan build loads slowly
STOP_TIMEOUT = 60.0


class ServerProcess:
    """`g3n serve -m MODEL --port 0 ...`; the port comes from its 'listening on' line."""

    def __init__(self, binary: Path, model: Path, *args: str, threads: int = 1):
        self.cmd = [str(binary), "serve", "-m", str(model), "--host", "127.0.0.1", "--port", "0",
                    "-t", str(threads), *map(str, args)]
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, errors="replace")
        self.log: list[str] = []
        lines: queue.Queue = queue.Queue()

        def pump():
            for line in self.proc.stderr:
                self.log.append(line)
                lines.put(line)
            lines.put(None)

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        deadline = time.monotonic() + START_TIMEOUT
        self.port = None
        while self.port is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                pytest.fail(f"g3n serve did not start within {START_TIMEOUT:.0f}s:\n{self.stderr()}")
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(timeout=10)
                pytest.fail(f"g3n serve exited with {self.proc.returncode} before listening:\n{self.stderr()}")
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
        self.host = "127.0.0.1"
        self.base_url = f"http://{self.host}:{self.port}"

    def stderr(self) -> str:
        return "".join(self.log)[-5000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"g3n serve did not stop within {STOP_TIMEOUT:.0f}s of SIGTERM:\n{self.stderr()}")
        self._pump.join(timeout=10)
        return self.proc.returncode

    def stop_and_check(self) -> None:
        """Stops the server; a crash during the tests (e.g. a sanitizer report) fails here."""
        was_alive = self.alive()
        rc = self.stop()
        assert was_alive and rc == 0, f"g3n serve ended with {rc} (alive before SIGTERM: {was_alive}):\n{self.stderr()}"

    # ---- raw HTTP ----------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body=None, headers: dict | None = None,
                timeout: float = 120.0) -> tuple[int, dict, bytes]:
        """One request on a fresh connection; returns (status, headers (lower-case names), body bytes)."""
        h = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
            h.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            conn.close()

    def post_json(self, path: str, body, headers: dict | None = None, timeout: float = 120.0):
        status, hdrs, data = self.request("POST", path, body, headers, timeout)
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        return status, hdrs, parsed, data

    def get_json(self, path: str, headers: dict | None = None):
        status, _, data = self.request("GET", path, headers=headers, timeout=30)
        return status, json.loads(data)

    def metrics(self, headers: dict | None = None) -> dict[str, float]:
        """Unlabelled samples and labelled ones (name{labels}) of GET /metrics."""
        status, _, data = self.request("GET", "/metrics", headers=headers, timeout=30)
        assert status == 200, data
        out = {}
        for line in data.decode().splitlines():
            if not line or line.startswith("#"):
                continue
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
        return out

    def wait_metric(self, name: str, pred, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while True:
            v = self.metrics().get(name)
            if v is not None and pred(v):
                return v
            if time.monotonic() > deadline:
                pytest.fail(f"/metrics {name} = {v}: condition not met within {timeout:.0f}s\n{self.stderr()}")
            time.sleep(0.05)


def sse_events(data: bytes) -> list[str]:
    """The `data:` payloads of a server-sent-events body, in order."""
    out = []
    for event in data.decode().split("\n\n"):
        for line in event.split("\n"):
            if line.startswith("data: "):
                out.append(line[len("data: "):])
    return out
