"""g3n's GGML dequantisers and quantisers against gguf-py (the `gguf` pip package), bit for bit, and g3n's GGUF
writer against gguf-py's reader.

The test writes, with gguf-py's GGUFWriter, one GGUF file holding a tensor of every type g3n dequantises:
  * F32, F16, BF16 and Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 quantised by gguf.quants.quantize from float32 data with
    edge cases (zero and constant blocks, exact halves, ties of magnitude, tiny scales that become float16 subnormals);
    the float32 input is saved as <name>.src.npy so g3n re-quantises it and must reproduce the file's bytes;
  * every dequantisable type (K-quants, IQ4_NL / IQ4_XS, and the 32-blocks again) as random bytes whose float16 scale
    fields are random finite values (gguf-py cannot quantise K-quants);
and gguf.quants.dequantize's float32 result as <name>.npy. The C++ side is a gtest in g3n_unit_tests
(GgufDequantFromPython.CaseDirectory, tests/unit/test_ggml_types.cpp), run with G3N_GGUF_DEQUANT_CASE_DIR pointing at
the directory: it compares every tensor bit for bit, then copies the whole file through g3n::GgufWriter to
rewritten.gguf, which this test reads back with gguf-py's GGUFReader (every field and tensor must match, and the file
must be byte-identical to gguf-py's, since both writers use the same canonical layout).

Environment: G3N_UNIT_TESTS overrides the test binary's path (default: tests/g3n_unit_tests next to the g3n binary,
i.e. build/release/tests/g3n_unit_tests).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf import GGUFReader, GGUFValueType, GGUFWriter  # noqa: E402
from gguf.constants import GGML_QUANT_SIZES  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

from g3n_harness import _flag, binary_path  # noqa: E402

# Types gguf-py quantises from float32 (besides F32 / F16, done with numpy).
QUANTISED = [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.BF16]
# Byte offsets of the float16 scale fields in one block, per type (the rest of a random block is any bytes).
SCALE_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
    T.IQ4_NL: [0], T.IQ4_XS: [0],
}
ROWS = 8


def unit_test_binary() -> Path:
    if os.environ.get("G3N_UNIT_TESTS"):
        return Path(os.environ["G3N_UNIT_TESTS"])
    return binary_path().parent / "tests" / "g3n_unit_tests"


def float_rows(rng: np.random.Generator, cols: int) -> np.ndarray:
    """ROWS x cols float32 with the cases where quantisers differ in detail."""
    x = np.empty((ROWS, cols), dtype=np.float32)
    x[0] = rng.standard_normal(cols)
    x[1] = rng.standard_normal(cols) * 1e-3
    x[2] = 0.0                                              # d = 0 in every block
    x[3] = 0.7                                              # constant blocks: max == min
    halves = rng.integers(-254, 255, cols).astype(np.float32) / 2  # exact .5 values ...
    halves[::32] = 127.0                                    # ... with amax 127 -> Q8_0 d = 1: x * id hits ties exactly
    x[4] = halves
    x[5] = rng.uniform(-1000, 1000, cols)
    ties = rng.integers(1, 4, cols).astype(np.float32)
    x[6] = np.where(np.arange(cols) % 2 == 0, ties, -ties)  # equal magnitudes of both signs: first one wins
    x[7] = rng.standard_normal(cols) * 1e-6                 # scales become float16 subnormals
    return x


def random_finite_f16_bits(rng: np.random.Generator, n: int) -> np.ndarray:
    h = rng.integers(0, 1 << 16, n, dtype=np.uint32).astype(np.uint16)
    return np.where((h & 0x7C00) == 0x7C00, h & np.uint16(0xFBFF), h).astype(np.uint16)  # exponent 31 -> 30


def random_blocks(rng: np.random.Generator, qtype: T, rows: int, cols: int) -> np.ndarray:
    block, size = GGML_QUANT_SIZES[qtype]
    n_blocks = rows * cols // block
    b = rng.integers(0, 256, (n_blocks, size), dtype=np.uint16).astype(np.uint8)
    for off in SCALE_FIELDS[qtype]:
        b[:, off:off + 2] = random_finite_f16_bits(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return b.reshape(rows, cols // block * size)


def build_case(tmp: Path) -> dict[str, bool]:
    """Writes case.gguf, <name>.npy and <name>.src.npy; returns {tensor name: has a .src.npy}."""
    rng = np.random.default_rng(20250611)
    w = GGUFWriter(tmp / "case.gguf", arch="gemma3n")
    # Metadata of every type, for the writer round trip.
    w.add_uint8("t.u8", 255)
    w.add_int8("t.i8", -128)
    w.add_uint16("t.u16", 65535)
    w.add_int16("t.i16", -32768)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 1e-6)
    w.add_bool("t.bool", True)
    w.add_string("t.string", "h\u00e9llo \u2581world")
    w.add_uint64("t.u64", 2**64 - 1)
    w.add_int64("t.i64", -(2**63))
    w.add_float64("t.f64", 3.141592653589793)
    w.add_array("a.string", ["<pad>", "<eos>", "", "\u2581the"])
    w.add_array("a.i32", [1, -2, 3])
    w.add_array("a.f32", [0.5, -1.25])
    w.add_array("a.bool", [True, False, True])
    w.add_key_value("a.u64", [1, 2**64 - 1], GGUFValueType.ARRAY, sub_type=GGUFValueType.UINT64)
    w.add_key_value("a.f64", [1e300, -0.0], GGUFValueType.ARRAY, sub_type=GGUFValueType.FLOAT64)
    w.add_key_value("a.u16", [7, 65535], GGUFValueType.ARRAY, sub_type=GGUFValueType.UINT16)
    w.add_array("a.nested", [["a", "b"], ["c"]])
    w.add_array("a.nested3", [[[1, 2], [3]], [[4]]])

    cases: dict[str, bool] = {}

    def add(name: str, qtype: T, stored: np.ndarray, shape: tuple[int, ...], src: np.ndarray | None) -> None:
        if stored.dtype == np.uint8:
            w.add_tensor(name, stored, raw_dtype=qtype)
            expected = dequantize(stored, qtype)
        else:
            w.add_tensor(name, stored)
            expected = stored.astype(np.float32)
        expected = np.ascontiguousarray(expected, dtype=np.float32).reshape(shape)
        np.save(tmp / f"{name}.npy", expected)
        if src is not None:
            np.save(tmp / f"{name}.src.npy", np.ascontiguousarray(src, dtype=np.float32).reshape(shape))
        cases[name] = src is not None

    # Quantised from float32 by gguf-py (and numpy for F32 / F16).
    for qtype in [T.F32, T.F16, *QUANTISED]:
        x = float_rows(rng, 512)
        if qtype == T.F16:
            x[5, :4] = [70000.0, -70000.0, 65519.0, 65520.0]  # overflow to inf, and the rounding edge
        with np.errstate(over="ignore"):  # the F16 overflow to inf is intended
            stored = quantize(x, qtype)
        add(f"q_{qtype.name}", qtype, stored, x.shape, x)
    # A 3-D tensor: dims (ne0, ne1, ne2) = (256, 3, 2).
    x3 = rng.standard_normal((2, 3, 256)).astype(np.float32)
    add("q_Q8_0_3d", T.Q8_0, quantize(x3, T.Q8_0), x3.shape, x3)

    # Random bits / bytes with finite scales, for everything g3n dequantises that gguf-py can dequantise.
    f32_bits = rng.integers(0, 1 << 32, (ROWS, 64), dtype=np.uint64).astype(np.uint32)
    f32_bits = np.where((f32_bits & 0x7F800000) == 0x7F800000, f32_bits & np.uint32(0xFF7FFFFF), f32_bits)
    add("r_F32", T.F32, f32_bits.astype(np.uint32).view(np.float32), (ROWS, 64), None)
    add("r_F16", T.F16, random_finite_f16_bits(rng, ROWS * 64).view(np.float16).reshape(ROWS, 64), (ROWS, 64), None)
    bf16 = rng.integers(0, 1 << 16, ROWS * 64, dtype=np.uint32).astype(np.uint16)
    bf16 = np.where((bf16 & 0x7F80) == 0x7F80, bf16 & np.uint16(0xFF7F), bf16).astype(np.uint16)
    add("r_BF16", T.BF16, bf16.view(np.uint8).reshape(ROWS, 128), (ROWS, 64), None)
    for qtype in SCALE_FIELDS:
        block, _ = GGML_QUANT_SIZES[qtype]
        cols = 4 * block if block == 256 else 512
        add(f"r_{qtype.name}", qtype, random_blocks(rng, qtype, ROWS, cols), (ROWS, cols), None)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return cases


def field_bytes(field) -> bytes:
    return b"".join(np.asarray(p).tobytes() for p in field.parts)


def test_dequantize_and_quantize_match_gguf_py_bit_for_bit(tmp_path):
    exe = unit_test_binary()
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        msg = f"unit test binary not found at {exe} (build g3n_unit_tests, or set G3N_UNIT_TESTS)"
        if _flag("G3N_REQUIRE_BINARY"):
            pytest.fail(msg)
        pytest.skip(msg)

    cases = build_case(tmp_path)
    env = dict(os.environ, G3N_GGUF_DEQUANT_CASE_DIR=str(tmp_path))
    run = subprocess.run(
        [str(exe), "--gtest_filter=GgufDequantFromPython.*", "--gtest_color=no"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, f"g3n_unit_tests failed (exit {run.returncode}):\n{out[-8000:]}"
    assert "[  PASSED  ] 1 test" in out and "SKIPPED" not in out, out[-4000:]
    m = re.search(r"\[gguf-dequant\] tensors=(\d+) quantized=(\d+)", out)
    assert m, out[-4000:]
    assert int(m.group(1)) == len(cases), out[-4000:]
    assert int(m.group(2)) == sum(cases.values()), out[-4000:]

    # g3n's writer output, read by gguf-py.
    original = GGUFReader(tmp_path / "case.gguf")
    rewritten = GGUFReader(tmp_path / "rewritten.gguf")
    assert list(rewritten.fields) == list(original.fields)
    for name, f in original.fields.items():
        g = rewritten.fields[name]
        assert g.types == f.types, name
        assert field_bytes(g) == field_bytes(f), name
    assert [t.name for t in rewritten.tensors] == [t.name for t in original.tensors]
    for a, b in zip(original.tensors, rewritten.tensors):
        assert b.tensor_type == a.tensor_type, a.name
        assert list(b.shape) == list(a.shape), a.name
        assert b.data_offset % 32 == 0, a.name
        assert np.asarray(b.data).tobytes() == np.asarray(a.data).tobytes(), a.name
    assert (tmp_path / "rewritten.gguf").read_bytes() == (tmp_path / "case.gguf").read_bytes()
