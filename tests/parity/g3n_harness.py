"""Locating and running the g3n binary (used by conftest.py and the tests)."""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]


def _flag(name: str) -> bool:
    v = os.environ.get(name, "")
    return v not in ("", "0", "false", "False", "no")


def binary_path() -> Path:
    return Path(os.environ.get("G3N_BIN") or REPO_ROOT / "build" / "release" / "g3n")


THREADS = int(os.environ.get("G3N_TEST_THREADS", "2"))
TIMEOUT = float(os.environ.get("G3N_TEST_TIMEOUT", "120"))


@dataclasses.dataclass
class G3N:
    path: Path
    threads: int = THREADS
    timeout: float = TIMEOUT

    def run(self, *args: str | os.PathLike, timeout: float | None = None,
            input: str | None = None) -> subprocess.CompletedProcess:
        cmd = [str(self.path), *map(str, args)]
        try:
            return subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=timeout or self.timeout,
                **({"input": input} if input is not None else {"stdin": subprocess.DEVNULL}),
            )
        except subprocess.TimeoutExpired as e:
            pytest.fail(
                f"g3n timed out after {e.timeout:.0f}s: {shlex.join(cmd)}\n"
                f"stdout: {_tail(e.stdout)}\nstderr: {_tail(e.stderr)}"
            )

    @staticmethod
    def ids_arg(ids) -> str:
        return ",".join(str(int(i)) for i in ids)

    def score(self, model_dir: Path, ids, out: Path, threads: int | None = None) -> subprocess.CompletedProcess:
        return self.run(
            "score", "-m", model_dir, "--ids", self.ids_arg(ids), "--out", out,
            "--threads", str(threads or self.threads),
        )

    def generate(self, model_dir: Path, ids, n: int, threads: int | None = None) -> subprocess.CompletedProcess:
        return self.run(
            "generate", "-m", model_dir, "--ids", self.ids_arg(ids), "-n", str(n),
            "--threads", str(threads or self.threads),
        )


def _tail(s, n: int = 3000) -> str:
    if s is None:
        return ""
    if isinstance(s, bytes):
        s = s.decode("utf-8", "replace")
    return s if len(s) <= n else "..." + s[-n:]


def describe_run(p: subprocess.CompletedProcess) -> str:
    return (
        f"command: {shlex.join(p.args)}\nreturncode: {p.returncode}\n"
        f"stdout: {_tail(p.stdout)}\nstderr: {_tail(p.stderr)}"
    )


def check_ok(p: subprocess.CompletedProcess, what: str) -> None:
    if p.returncode != 0:
        pytest.fail(f"{what}: g3n failed\n{describe_run(p)}")
