#include "quant/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/error.h"

namespace g3n::quant {

namespace {

void check_blocks(int64_t n, const char* what) {
  G3N_CHECK(n >= 0 && n % kQuantBlock == 0, what, ": length ", n, " is not a multiple of ", kQuantBlock);
}

void put_scale(uint8_t* block, float d) {
  const uint16_t h = f32_to_f16(d);
  std::memcpy(block, &h, 2);
}

}  // namespace

void quantize_row_q8_0(const float* x, int64_t n, void* out) {
  check_blocks(n, "quantize_row_q8_0");
  auto* p = static_cast<uint8_t*>(out);
  for (int64_t b = 0; b < n / kQuantBlock; ++b, x += kQuantBlock, p += kBlockBytesQ8_0) {
    float amax = 0.0f;
    for (int j = 0; j < kQuantBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_scale(p, d);
    for (int j = 0; j < kQuantBlock; ++j) p[2 + j] = uint8_t(int8_t(std::round(x[j] * id)));
  }
}

void quantize_row_q4_0(const float* x, int64_t n, void* out) {
  check_blocks(n, "quantize_row_q4_0");
  auto* p = static_cast<uint8_t*>(out);
  for (int64_t b = 0; b < n / kQuantBlock; ++b, x += kQuantBlock, p += kBlockBytesQ4_0) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQuantBlock; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_scale(p, d);
    for (int j = 0; j < kQuantBlock / 2; ++j) {
      // ggml: MIN(15, (int8_t)(x * id + 8.5f)); the sum is in [0.5, 16.5] so truncation is floor.
      const int lo = std::min(15, int(x[j] * id + 8.5f));
      const int hi = std::min(15, int(x[j + kQuantBlock / 2] * id + 8.5f));
      p[2 + j] = uint8_t(lo | (hi << 4));
    }
  }
}

void dequantize_row_q8_0(const void* in, int64_t n, float* out) {
  check_blocks(n, "dequantize_row_q8_0");
  const auto* p = static_cast<const uint8_t*>(in);
  for (int64_t b = 0; b < n / kQuantBlock; ++b) dequantize_block_q8_0(p + b * kBlockBytesQ8_0, out + b * kQuantBlock);
}

void dequantize_row_q4_0(const void* in, int64_t n, float* out) {
  check_blocks(n, "dequantize_row_q4_0");
  const auto* p = static_cast<const uint8_t*>(in);
  for (int64_t b = 0; b < n / kQuantBlock; ++b) dequantize_block_q4_0(p + b * kBlockBytesQ4_0, out + b * kQuantBlock);
}

void quantize_row_q8_act(const float* x, int64_t n, int8_t* q, float* d, int32_t* sums) {
  check_blocks(n, "quantize_row_q8_act");
  for (int64_t b = 0; b < n / kQuantBlock; ++b, x += kQuantBlock, q += kQuantBlock) {
    float amax = 0.0f;
    for (int j = 0; j < kQuantBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float db = amax / 127.0f;
    const float id = db != 0.0f ? 1.0f / db : 0.0f;
    int32_t s = 0;
    for (int j = 0; j < kQuantBlock; ++j) {
      q[j] = int8_t(std::round(x[j] * id));
      s += q[j];
    }
    d[b] = db;
    if (sums) sums[b] = s;
  }
}

namespace {

// Writes one row of `cols` float values as dtype `to` at `out`.
void store_row(const float* v, int64_t cols, DType to, uint8_t* out) {
  switch (to) {
    case DType::F32:
      std::memcpy(out, v, size_t(cols) * 4);
      break;
    case DType::BF16:
      for (int64_t i = 0; i < cols; ++i) {
        const uint16_t h = f32_to_bf16(v[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      break;
    case DType::F16:
      for (int64_t i = 0; i < cols; ++i) {
        const uint16_t h = f32_to_f16(v[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      break;
    case DType::Q8_0:
      quantize_row_q8_0(v, cols, out);
      break;
    case DType::Q4_0:
      quantize_row_q4_0(v, cols, out);
      break;
  }
}

OwnedTensor make_owned(DType to, int64_t rows, int64_t cols) {
  G3N_CHECK(rows >= 0 && cols >= 0, "convert: negative shape");
  if (dtype_is_quantized(to))
    G3N_CHECK(cols % kQuantBlock == 0, "cannot store rows of ", cols, " values as ", dtype_name(to),
              ": not a multiple of ", kQuantBlock);
  OwnedTensor t;
  t.dtype = to;
  t.shape = {rows, cols};
  t.bytes.resize(dtype_bytes(to, cols) * size_t(rows));
  return t;
}

template <class Fn>
void for_rows(int64_t rows, ThreadPool* pool, const Fn& fn) {
  if (pool) {
    pool->parallel_for(rows, 16, [&](int64_t r0, int64_t r1) { fn(r0, r1); });
  } else {
    fn(0, rows);
  }
}

}  // namespace

OwnedTensor convert_tensor(const TensorView& w, DType to, ThreadPool* pool) {
  G3N_CHECK(w.shape.size() == 2, "convert_tensor: expected a 2-D tensor, got ", shape_str(w.shape));
  const int64_t rows = w.dim(0), cols = w.dim(1);
  OwnedTensor t = make_owned(to, rows, cols);
  if (w.dtype == to) {
    std::memcpy(t.bytes.data(), w.data, t.bytes.size());
    return t;
  }
  const size_t out_row = dtype_bytes(to, cols);
  for_rows(rows, pool, [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = r0; r < r1; ++r) {
      to_f32(w, r * cols, cols, row.data());
      store_row(row.data(), cols, to, t.bytes.data() + size_t(r) * out_row);
    }
  });
  return t;
}

OwnedTensor quantize_tensor(const float* w, int64_t rows, int64_t cols, DType to, ThreadPool* pool) {
  OwnedTensor t = make_owned(to, rows, cols);
  const size_t out_row = dtype_bytes(to, cols);
  for_rows(rows, pool, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) store_row(w + r * cols, cols, to, t.bytes.data() + size_t(r) * out_row);
  });
  return t;
}

OwnedTensor transpose_tensor(const TensorView& w, DType to, ThreadPool* pool) {
  G3N_CHECK(w.shape.size() == 2, "transpose_tensor: expected a 2-D tensor, got ", shape_str(w.shape));
  const int64_t rows = w.dim(0), cols = w.dim(1);
  OwnedTensor t = make_owned(to, cols, rows);
  const size_t out_row = dtype_bytes(to, rows);
  // Output rows (= input columns) in groups: each group reads the source once, row by row.
  constexpr int64_t kGroup = 64;
  const int64_t n_groups = (cols + kGroup - 1) / kGroup;
  for_rows(n_groups, pool, [&](int64_t g0, int64_t g1) {
    std::vector<float> src(static_cast<size_t>(kGroup)), tile(static_cast<size_t>(kGroup * rows));
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t c0 = g * kGroup, c1 = std::min(cols, c0 + kGroup);
      for (int64_t r = 0; r < rows; ++r) {
        to_f32(w, r * cols + c0, c1 - c0, src.data());  // c0 is a multiple of 64: block aligned
        for (int64_t c = c0; c < c1; ++c) tile[size_t((c - c0) * rows + r)] = src[size_t(c - c0)];
      }
      for (int64_t c = c0; c < c1; ++c)
        store_row(tile.data() + (c - c0) * rows, rows, to, t.bytes.data() + size_t(c) * out_row);
    }
  });
  return t;
}

}  // namespace g3n::quant
