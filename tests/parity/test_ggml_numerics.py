"""g3n's emulation of llama.cpp's CPU arithmetic (--numerics ggml, src/kernels/ggml_cpu.h) against libggml itself.

Runs the C++ test program g3n_ggml_oracle_tests (built next to the g3n binary) with G3N_LIBGGML_DIR pointing at
the libggml-base / libggml-cpu shared libraries of the `llama-cpp-python` package. It checks the activation
quantisers (Q8_0, Q8_1, Q8_K) bit for bit, the products of every weight type g3n multiplies the ggml way (Q4_0,
Q4_1, Q5_0, Q5_1, Q8_0, Q2_K .. Q6_K, IQ4_NL, IQ4_XS, on weights quantised by ggml) against ggml's vec_dot (bit
for bit for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q5_K and Q6_K, whose lane order g3n follows), the SIMD Q8_0 / Q4_0 kernels with ggml
activations on every SIMD target, and the float16 GELU table, all 65536 entries. Skips when
llama-cpp-python is not installed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from g3n_harness import binary_path


def test_ggml_cpu_arithmetic_matches_libggml(record):
    try:
        import llama_cpp
    except ImportError as e:
        pytest.skip(f"Python package llama-cpp-python (libggml) not importable: {e}")
    lib = Path(llama_cpp.__file__).parent / "lib"
    if not (lib / "libggml-cpu.so").is_file():
        pytest.skip(f"no libggml-cpu.so in {lib}")
    exe = binary_path().parent / "g3n_ggml_oracle_tests"
    assert exe.is_file(), f"{exe} not built (tests/CMakeLists.txt builds it beside g3n)"
    env = dict(os.environ, G3N_LIBGGML_DIR=str(lib))
    p = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=300)
    print(p.stdout[-4000:])
    assert p.returncode == 0, f"g3n_ggml_oracle_tests failed:\n{p.stdout[-6000:]}\n{p.stderr[-2000:]}"
    # Nothing may skip: the libraries were found, so every comparison must have run.
    assert "SKIPPED" not in p.stdout, p.stdout[-3000:]
    n = p.stdout.count("[       OK ]")
    record("ggml numerics", "libggml oracle tests", f"{n} passed", n >= 4)
    assert n >= 4, p.stdout[-3000:]
