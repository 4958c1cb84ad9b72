// bench_kernels: throughput of the matmul kernels against the machine's memory bandwidth.
//
//   bench_kernels [--quick] [--filter TEXT]
//
// First measures streaming read bandwidth (one pass over a 1 GiB buffer as four interleaved
// sequential streams per thread, 1 and 2 threads), then
// times every case and prints one line per case, whitespace-separated, in this fixed format:
//
//   case dtype out in tokens threads path cache time_us GB/s GFLOP/s %stream busy%
//
//   case     decode (tokens = 1), prefill (matmul, then gemm: path .../gemm), sparse-cols / sparse-rowsT / sparse-dense (the FFN down
//            projection with 5% of 16384 activations nonzero), or stream
//   path     the SIMD path (kernels::active_simd_target) and, for block types, /int8 or /float
//            activations (kernels::QuantActivations)
//   cache    cold: a 512 MiB buffer is read between repetitions, so weights come from DRAM as they
//            do in a real decode step; hot: repeated back to back (weights stay in L2/L3)
//   time_us  median over the repetitions
//   GB/s     weight bytes read / time (the figure to hold against stream bandwidth for decode)
//   %stream  GB/s as a share of the stream bandwidth measured with the same thread count
//   busy%    process CPU time / (wall time x threads) over the timed repetitions: well below 100
//            means the threads were descheduled (a shared machine) and the line is not reliable
//
// --filter keeps the lines whose case/dtype/shape text contains TEXT. Not run by the tests.
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "base/dtype.h"
#include "base/thread_pool.h"
#include "kernels/gemm.h"
#include "kernels/matmul.h"
#include "quant/quant.h"

using namespace g3n;
using Clock = std::chrono::steady_clock;

namespace {

bool g_quick = false;
std::string g_filter;
double g_stream[3] = {0, 0, 0};  // GB/s by thread count

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Deterministic cheap values in [-1, 1): random generation of 512M normals would dominate the run.
void fill(float* x, size_t n, uint64_t seed) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x[i] = float(int32_t(s >> 32)) * (1.0f / 2147483648.0f);
  }
}

// Reads a buffer once with all pool threads, each chunk as four interleaved sequential streams
// (a matrix-vector tile reads four weight rows at once); returns a sum so the reads stay. Integer
// sums vectorise without reassociating floats.
double read_all(const std::vector<float>& buf, ThreadPool& pool) {
  const int64_t chunk = 1 << 20;  // floats
  const int64_t n_chunks = int64_t(buf.size()) / chunk;
  std::vector<uint32_t> partial(size_t(n_chunks), 0);
  pool.parallel_for(n_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const auto* p = reinterpret_cast<const uint32_t*>(buf.data() + c * chunk);
      const int64_t q = chunk / 4;
      uint32_t acc[16] = {};
      for (int64_t i = 0; i < q; i += 4)
        for (int k = 0; k < 4; ++k) {
          acc[k] += p[i + k];
          acc[4 + k] += p[q + i + k];
          acc[8 + k] += p[2 * q + i + k];
          acc[12 + k] += p[3 * q + i + k];
        }
      uint32_t s = 0;
      for (uint32_t v : acc) s += v;
      partial[size_t(c)] = s;
    }
  });
  double s = 0;
  for (uint32_t v : partial) s += v;
  return s;
}

std::vector<float>& eviction_buffer() {
  static std::vector<float> buf(size_t(512) << 18, 1.0f);  // 512 MiB
  return buf;
}

volatile double g_sink = 0;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// CPU time / (wall time x threads) of the last timed case: below ~90% the threads were not
// running all the time (a shared machine), and the time is not to be trusted.
double g_busy = 0;

// Times fn(): median of repetitions, at least `min_reps`, until ~`budget` seconds have passed.
template <class Fn>
double time_median(const Fn& fn, bool cold, ThreadPool& pool, int min_reps, double budget) {
  fn();  // warm-up (first touch, page faults, dispatch)
  std::vector<double> times;
  double cpu = 0, wall = 0;
  const auto start = Clock::now();
  while (int(times.size()) < min_reps || (seconds_since(start) < budget && times.size() < 200)) {
    if (cold) g_sink = g_sink + read_all(eviction_buffer(), pool);
    const double c0 = process_cpu_seconds();
    const auto t0 = Clock::now();
    fn();
    times.push_back(seconds_since(t0));
    cpu += process_cpu_seconds() - c0;
    wall += times.back();
  }
  g_busy = 100.0 * cpu / (wall * pool.size());
  return median(times);
}

bool selected(const std::string& text) { return g_filter.empty() || text.find(g_filter) != std::string::npos; }

void report(const char* kind, const char* dtype, int64_t out, int64_t in, int64_t tokens, int threads,
            const std::string& path, bool cold, double t, double bytes, double flops) {
  const double gbs = bytes / t * 1e-9;
  std::printf("%-13s %-5s %6lld %5lld %3lld %d %-17s %-4s %10.1f %7.2f %7.2f %6.1f %5.0f\n", kind, dtype,
              (long long)out, (long long)in, (long long)tokens, threads, path.c_str(), cold ? "cold" : "hot", t * 1e6,
              gbs, flops / t * 1e-9, 100.0 * gbs / g_stream[threads], g_busy);
  std::fflush(stdout);
}

void bench_stream() {
  std::vector<float> buf(size_t(1) << 28, 0.5f);  // 1 GiB
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    const double t = time_median([&] { g_sink = g_sink + read_all(buf, pool); }, false, pool, 3, 1.0);
    g_stream[threads] = double(buf.size() * 4) / t * 1e-9;
    std::printf("%-13s %-5s %6s %5s %3s %d %-17s %-4s %10.1f %7.2f %7s %6.1f %5.0f\n", "stream", "-", "-", "-", "-",
                threads, "read-1GiB", "cold", t * 1e6, g_stream[threads], "-", 100.0, g_busy);
  }
}

std::string path_name(DType dt, kernels::QuantActivations qa) {
  std::string p = kernels::active_simd_target();
  if (dtype_is_quantized(dt)) p += qa == kernels::QuantActivations::kInt8 ? "/int8" : "/float";
  return p;
}

// One product timed: kernels::matmul, or with `gemm` kernels::gemm (packed float panels; what prefill uses
// from kGemmMinRows rows; path .../gemm).
void bench_matmul(const char* kind, const quant::OwnedTensor& w, int64_t tokens, int threads, bool cold,
                  kernels::QuantActivations qa = kernels::QuantActivations::kInt8, bool gemm = false) {
  const int64_t out = w.shape[0], in = w.shape[1];
  std::vector<float> x(size_t(tokens * in)), y(size_t(tokens * out));
  fill(x.data(), x.size(), 7);
  ThreadPool pool(threads);
  kernels::MatmulOptions o;
  o.quant_activations = qa;
  const TensorView v = w.view();
  const double budget = g_quick ? 0.2 : 1.0;
  const double t = time_median(
      [&] {
        if (gemm) kernels::gemm(v, x.data(), tokens, y.data(), pool);
        else kernels::matmul(v, x.data(), tokens, y.data(), pool, o);
      },
      cold, pool, g_quick ? 2 : 5, budget);
  const std::string path = gemm ? kernels::active_simd_target() + "/gemm" : path_name(w.dtype, qa);
  report(kind, dtype_name(w.dtype), out, in, tokens, threads, path, cold, t, double(w.bytes.size()),
         2.0 * double(out) * double(in) * double(tokens));
}

std::string shape_text(const char* kind, DType dt, int64_t out, int64_t in) {
  return std::string(kind) + " " + dtype_name(dt) + " " + std::to_string(out) + "x" + std::to_string(in);
}

void bench_shapes() {
  const std::vector<std::pair<int64_t, int64_t>> shapes = g_quick
      ? std::vector<std::pair<int64_t, int64_t>>{{2048, 2048}, {8192, 2048}}
      : std::vector<std::pair<int64_t, int64_t>>{{2048, 2048}, {8192, 2048}, {2048, 8192}, {262144, 2048}};
  const DType types[] = {DType::F32, DType::BF16, DType::F16, DType::Q8_0, DType::Q4_0};
  for (const auto& [out, in] : shapes) {
    bool any = false;
    for (DType dt : types) any |= selected(shape_text("decode", dt, out, in)) || selected(shape_text("prefill", dt, out, in));
    if (!any) continue;
    std::vector<float> src(size_t(out * in));
    fill(src.data(), src.size(), uint64_t(out * 31 + in));
    ThreadPool conv(2);
    for (DType dt : types) {
      const bool lm_head = out > 100000;
      if (lm_head && dt == DType::F16) continue;  // same bytes as BF16; saves a minute
      const bool dec = selected(shape_text("decode", dt, out, in));
      const bool pre = !lm_head && selected(shape_text("prefill", dt, out, in));
      if (!dec && !pre) continue;
      const quant::OwnedTensor w = quant::quantize_tensor(src.data(), out, in, dt, &conv);
      for (int threads : {1, 2})
        if (dec) bench_matmul("decode", w, 1, threads, true);
      if (dec && !lm_head) bench_matmul("decode", w, 1, 1, false);
      for (int threads : {1, 2})
        if (pre) {
          bench_matmul("prefill", w, g_quick ? 64 : 256, threads, false);
          bench_matmul("prefill", w, g_quick ? 64 : 256, threads, false, kernels::QuantActivations::kInt8, true);
        }
    }
  }
}

// The quantised paths against each other: SIMD targets and int8 / float activations.
void bench_paths() {
  const int64_t out = 8192, in = 2048;
  std::vector<float> src(size_t(out * in));
  fill(src.data(), src.size(), 99);
  for (DType dt : {DType::Q8_0, DType::Q4_0, DType::BF16}) {
    if (!selected(shape_text("paths", dt, out, in))) continue;
    const quant::OwnedTensor w = quant::quantize_tensor(src.data(), out, in, dt);
    for (const auto& target : kernels::simd_targets()) {
      if (target.name == "SSSE3" || target.name == "SCALAR") continue;
      kernels::force_simd_target(&target);
      for (auto qa : {kernels::QuantActivations::kInt8, kernels::QuantActivations::kFloat}) {
        if (!dtype_is_quantized(dt) && qa == kernels::QuantActivations::kFloat) continue;
        bench_matmul("paths-decode", w, 1, 1, true, qa);
        bench_matmul("paths-decode", w, 1, 1, false, qa);
        bench_matmul("paths-prefill", w, g_quick ? 64 : 256, 1, false, qa);
      }
    }
    kernels::force_simd_target(nullptr);
  }
}

// FFN down projection of Gemma 3n E4B (out 2048, in 16384) with 5% of the activations nonzero:
// dense matvec vs selected columns of [out, in] vs selected rows of the transposed copy.
void bench_sparse() {
  const int64_t out = 2048, in = 16384;
  std::vector<float> src(size_t(out * in)), x(size_t(in), 0.0f), y(static_cast<size_t>(out));
  fill(src.data(), src.size(), 5);
  std::vector<int32_t> idx(static_cast<size_t>(in));
  for (int64_t i = 0; i < in; i += 20) x[size_t(i + (i * 7) % 20)] = 0.5f;  // 5%, spread out
  const int64_t n = kernels::nonzero_indices(x.data(), in, idx.data());
  std::vector<float> vals(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) vals[size_t(k)] = x[size_t(idx[size_t(k)])];
  for (DType dt : {DType::BF16, DType::Q8_0, DType::Q4_0}) {
    if (!selected(shape_text("sparse", dt, out, in))) continue;
    const quant::OwnedTensor w = quant::quantize_tensor(src.data(), out, in, dt);
    const quant::OwnedTensor wt = quant::transpose_tensor(w.view(), dt);
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      const double flops = 2.0 * double(out) * double(n);
      const double t_dense = time_median([&] { kernels::matmul(w.view(), x.data(), 1, y.data(), pool); }, true, pool, 5, 1.0);
      report("sparse-dense", dtype_name(dt), out, in, 1, threads, path_name(dt, kernels::QuantActivations::kInt8), true,
             t_dense, double(w.bytes.size()), 2.0 * double(out) * double(in));
      const double t_cols = time_median(
          [&] { kernels::matmul_columns(w.view(), x.data(), idx.data(), n, y.data(), pool); }, true, pool, 5, 1.0);
      report("sparse-cols", dtype_name(dt), out, in, 1, threads, "scalar-gather", true, t_cols,
             double(w.bytes.size()), flops);
      const double t_rows = time_median(
          [&] { kernels::matmul_transposed_rows(wt.view(), idx.data(), vals.data(), n, y.data(), pool); }, true, pool, 5,
          1.0);
      report("sparse-rowsT", dtype_name(dt), out, in, 1, threads, kernels::active_simd_target(), true, t_rows,
             double(wt.bytes.size()) * double(n) / double(in), flops);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) {
      g_quick = true;
    } else if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) {
      g_filter = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--filter TEXT]\n", argv[0]);
      return 2;
    }
  }
  std::printf("# bench_kernels: SIMD path %s; columns: case dtype out in tokens threads path cache time_us GB/s "
              "GFLOP/s %%stream busy%%\n",
              kernels::active_simd_target().c_str());
  bench_stream();
  bench_shapes();
  bench_paths();
  bench_sparse();
  return 0;
}
