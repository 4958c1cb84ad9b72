"""Fixtures for the server tests: the g3n binary ($G3N_BIN), the tiny random checkpoint, and `g3n serve`
processes on free loopback ports.

Environment: as tests/parity (G3N_BIN, G3N_REQUIRE_BINARY, G3N_TEST_THREADS, G3N_TEST_TIMEOUT).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "parity"))

from g3n_harness import G3N, _flag, binary_path  # noqa: E402
from server_harness import ServerProcess  # noqa: E402


def pytest_collection_modifyitems(config, items):
    mine = [it for it in items if HERE in Path(str(it.fspath)).resolve().parents]
    if not mine:
        return
    b = binary_path()
    if (b.is_file() and os.access(b, os.X_OK)) or _flag("G3N_REQUIRE_BINARY"):
        return
    skip = pytest.mark.skip(reason=f"g3n binary not found at {b} (build it, or set G3N_BIN)")
    for it in mine:
        it.add_marker(skip)


@pytest.fixture(scope="session")
def g3n() -> G3N:
    b = binary_path()
    if not (b.is_file() and os.access(b, os.X_OK)):
        msg = f"g3n binary not found (or not executable) at {b}"
        if _flag("G3N_REQUIRE_BINARY"):
            pytest.fail(msg + " and G3N_REQUIRE_BINARY is set")
        pytest.skip(msg)
    return G3N(b)


@pytest.fixture(scope="session")
def tiny(g3n, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("server_tiny") / "tiny"
    p = g3n.run("make-random", "--preset", "tiny", "--out", out, "--seed", "5")
    assert p.returncode == 0, p.stderr
    return out


@pytest.fixture(scope="session")
def server(g3n, tiny):
    """One server shared by the API and bad-input tests: 2 slots, a queue of 8."""
    s = ServerProcess(g3n.path, tiny, "--parallel", "2", "--queue", "8", threads=g3n.threads)
    yield s
    s.stop_and_check()
