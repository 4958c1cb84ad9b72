// Per-target SIMD math shared by the row kernels (rows.cpp) and the fused attention (gemm.cpp):
// clip, reciprocal, sigmoid, GELU-tanh, softmax of a row. Highway's -inl.h pattern: included by a
// file that foreach_target re-includes, once per target (the toggle guard below).
#if defined(G3N_KERNELS_ROWS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef G3N_KERNELS_ROWS_INL_H_
#undef G3N_KERNELS_ROWS_INL_H_
#else
#define G3N_KERNELS_ROWS_INL_H_
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>

#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

#include "kernels/rows.h"

HWY_BEFORE_NAMESPACE();
namespace g3n::kernels::HWY_NAMESPACE {
namespace rows_simd {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// torch.clamp(x, -c, c): NaN compares false both ways and stays.
HWY_INLINE VF Clip(DF d, VF x, float c) {
  const VF hi = hn::Set(d, c), lo = hn::Set(d, -c);
  return hn::IfThenElse(hn::Lt(x, lo), lo, hn::IfThenElse(hn::Gt(x, hi), hi, x));
}

// 1 / x for x in [1, 2^116]: on x86 the approximate reciprocal (12 / 14 bits) and one Newton step,
// within ~2 ulp, several times the throughput of a division (vdivps is the bottleneck of GELU).
HWY_INLINE VF Reciprocal(DF d, VF x) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  const VF r = hn::ApproximateReciprocal(x);
  return hn::Mul(r, hn::NegMulAdd(x, r, hn::Set(d, 2.0f)));
#else
  return hn::Div(hn::Set(d, 1.0f), x);
#endif
}

// sigmoid(x) from exp(-|x|) (never overflows): 1 / (1 + e) for x >= 0, e / (1 + e) below.
HWY_INLINE VF Sigmoid(DF d, VF x) {
  const VF e = hn::Exp(d, hn::Neg(hn::Abs(x)));
  const VF one = hn::Set(d, 1.0f);
  const VF inv = Reciprocal(d, hn::Add(one, e));
  return hn::IfThenElse(hn::Ge(x, hn::Zero(d)), inv, hn::Mul(e, inv));
}

// 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), tanh(u) = 1 - 2 / (exp(2u) + 1) with 2u clamped
// to [-80, 80] (tanh is +-1 in float32 long before; Exp is valid up to 104).
HWY_INLINE VF GeluTanh(DF d, VF x) {
  const VF x3 = hn::Mul(hn::Mul(x, x), x);
  VF u2 = hn::Mul(hn::Set(d, 2.0f * 0.7978845608028654f), hn::Add(x, hn::Mul(hn::Set(d, 0.044715f), x3)));
  u2 = hn::Min(hn::Max(u2, hn::Set(d, -80.0f)), hn::Set(d, 80.0f));
  const VF one = hn::Set(d, 1.0f);
  const VF r = Reciprocal(d, hn::Add(hn::Exp(d, u2), one));  // e^2u + 1 in [1, 2^116]
  const VF th = hn::Sub(one, hn::Add(r, r));
  return hn::Mul(hn::Mul(hn::Set(d, 0.5f), x), hn::Add(one, th));
}

HWY_INLINE VF Activate(DF d, VF x, RowActivation act) {
  switch (act) {
    case RowActivation::kGeluTanh: return GeluTanh(d, x);
    case RowActivation::kSilu: return hn::Mul(x, Sigmoid(d, x));
    case RowActivation::kNone: break;
  }
  return x;
}

// The last n % lanes values of a row go through a padded vector.
template <class Fn>
HWY_INLINE void ForEachVector(int64_t n, const Fn& fn) {
  const DF d;
  const int64_t N = int64_t(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N) fn(i, N);
  if (i < n) fn(i, n - i);
}

HWY_INLINE VF LoadPart(DF d, const float* p, int64_t count) {
  if (count == int64_t(hn::Lanes(d))) return hn::LoadU(d, p);
  HWY_ALIGN float buf[hn::MaxLanes(DF())] = {};
  std::copy(p, p + count, buf);
  return hn::Load(d, buf);
}

HWY_INLINE void StorePart(DF d, VF v, float* p, int64_t count) {
  if (count == int64_t(hn::Lanes(d))) {
    hn::StoreU(v, d, p);
    return;
  }
  HWY_ALIGN float buf[hn::MaxLanes(DF())];
  hn::Store(v, d, buf);
  std::copy(buf, buf + count, p);
}

// x[0, n) = softmax(x[0, n) * scale): max-subtracted, float32 sums.
HWY_INLINE void SoftmaxRow(float* row, int64_t n, float scale) {
  const DF d;
  const VF vs = hn::Set(d, scale);
  VF m = hn::Set(d, -INFINITY);
  ForEachVector(n, [&](int64_t i, int64_t count) {
    const VF v = hn::Mul(LoadPart(d, row + i, count), vs);
    m = count == int64_t(hn::Lanes(d)) ? hn::Max(m, v) : hn::Max(m, hn::IfThenElse(hn::FirstN(d, size_t(count)), v, m));
  });
  const VF vm = hn::Set(d, hn::GetLane(hn::MaxOfLanes(d, m)));
  VF s = hn::Zero(d);
  ForEachVector(n, [&](int64_t i, int64_t count) {
    const VF e = hn::Exp(d, hn::Sub(hn::Mul(LoadPart(d, row + i, count), vs), vm));
    s = hn::Add(s, hn::IfThenElseZero(hn::FirstN(d, size_t(count)), e));
    StorePart(d, e, row + i, count);
  });
  const VF inv = hn::Set(d, 1.0f / hn::GetLane(hn::SumOfLanes(d, s)));
  ForEachVector(n, [&](int64_t i, int64_t count) {
    StorePart(d, hn::Mul(LoadPart(d, row + i, count), inv), row + i, count);
  });
}

}  // namespace rows_simd
}  // namespace g3n::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // G3N_KERNELS_ROWS_INL_H_
