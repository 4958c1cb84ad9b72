"""Shared fixtures for the g3n parity suite.

Environment:
  G3N_BIN             path of the g3n binary (default: <repo>/build/release/g3n)
  G3N_REQUIRE_BINARY  if set (non-empty, not "0"), a missing binary is a test failure instead of a skip
  G3N_REFERENCE_ONLY  if set, run only the reference self-checks (marker `reference`), never the binary
  G3N_TEST_THREADS    value passed as --threads to g3n (default 2)
  G3N_TEST_TIMEOUT    seconds allowed for one g3n invocation (default 120)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gemma3n_models as gm  # noqa: E402
from g3n_harness import G3N, _flag, binary_path  # noqa: E402


# --------------------------------------------------------------------------------------------------------------
# Collection: skip / fail when the binary is missing
# --------------------------------------------------------------------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line("markers", "reference: checks of the Hugging Face reference side only (no binary)")
    config.stash[_RESULTS] = []
    config.stash[_CASES] = []


def pytest_collection_modifyitems(config, items):
    mine = [it for it in items if HERE in Path(str(it.fspath)).resolve().parents]
    if _flag("G3N_REFERENCE_ONLY"):
        skip = pytest.mark.skip(reason="G3N_REFERENCE_ONLY is set: only reference self-checks run")
        for it in mine:
            if "reference" not in it.keywords:
                it.add_marker(skip)
        return
    b = binary_path()
    if b.is_file() and os.access(b, os.X_OK):
        return
    if _flag("G3N_REQUIRE_BINARY"):
        return  # the `g3n` fixture fails each test with the reason
    skip = pytest.mark.skip(
        reason=f"g3n binary not found at {b} (build it, or set G3N_BIN); set G3N_REQUIRE_BINARY=1 to make this "
        "a failure, or G3N_REFERENCE_ONLY=1 to run the reference self-checks alone"
    )
    for it in mine:
        it.add_marker(skip)


# --------------------------------------------------------------------------------------------------------------
# Running the binary
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def g3n() -> G3N:
    b = binary_path()
    if not (b.is_file() and os.access(b, os.X_OK)):
        msg = f"g3n binary not found (or not executable) at {b}"
        if _flag("G3N_REQUIRE_BINARY"):
            pytest.fail(msg + " and G3N_REQUIRE_BINARY is set")
        pytest.skip(msg)
    return G3N(b)


# --------------------------------------------------------------------------------------------------------------
# Models (built once per session, lazily)
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    import torch

    torch.set_num_threads(int(os.environ.get("G3N_TORCH_THREADS", "1")))
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:
        pass


class CaseStore:
    def __init__(self, root: Path, config):
        self.root = root
        self.config = config
        self._cases: dict[str, gm.Case] = {}

    def get(self, name: str) -> gm.Case:
        if name not in self._cases:
            case = gm.build_case(gm.SPECS_BY_NAME[name], self.root)
            self._cases[name] = case
            self.config.stash[_CASES].append(gm.describe(case))
            print(f"\n[model] {gm.describe(case)}")
        return self._cases[name]


@pytest.fixture(scope="session")
def cases(tmp_path_factory, request, _torch_threads) -> CaseStore:
    return CaseStore(tmp_path_factory.mktemp("g3n_models"), request.config)


# --------------------------------------------------------------------------------------------------------------
# Result collection + end-of-session summary
# --------------------------------------------------------------------------------------------------------------

_RESULTS = pytest.StashKey[list]()
_CASES = pytest.StashKey[list]()


@pytest.fixture
def record(request):
    """record(config, check, figure, ok, detail='') -> stores one line for the end-of-session summary."""

    def _record(config_name: str, check: str, figure: str, ok: bool, detail: str = "") -> None:
        line = (config_name, check, figure, "ok" if ok else "FAIL", detail)
        request.config.stash[_RESULTS].append(line)
        print(f"\n[parity] {config_name:<22} {check:<22} {figure:<28} {'ok' if ok else 'FAIL'} {detail}")

    return _record


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    cases = config.stash.get(_CASES, [])
    results = config.stash.get(_RESULTS, [])
    if not cases and not results:
        return
    tr = terminalreporter
    tr.section("g3n parity summary")
    if cases:
        tr.write_line("models:")
        for c in cases:
            tr.write_line("  " + c)
    if results:
        tr.write_line("checks:")
        for name, check, figure, status, detail in results:
            tr.write_line(f"  {name:<22} {check:<22} {figure:<28} {status:<4} {detail}")
