// Layer normalization over the last axis for XLA:CPU, forward and backward, called through the XLA FFI
// (layernorm/native.py builds and registers this file; layernorm/native_path.py makes it differentiable).
//
// Why kernels of our own: XLA:CPU compiles layer norm into separate loops over the whole array (mean, variance,
// output; the backward reads x and dy several times more), so the data streams from memory three or more times. Here
// each row is read from memory once and its passes run while it sits in L1: the forward costs about what `x * a + b`
// costs, and the backward reads x and dy once.
//
// Shapes: x, y, dy, dx (..., H) viewed as R rows of H; mean and rstd = 1 / sqrt(var + eps) one per row; scale, bias,
// dscale, dbias (..., H) viewed as P rows of H, P dividing R: the rows are P consecutive groups, group p using
// parameter row p. P is 1 normally; under vmap the batch axis comes first and P is the batch size.
// center: true for layer norm; false for RMS norm (Zhang & Sennrich 2019), where the mean is taken as 0, so rstd =
// 1 / sqrt(mean(x^2) + eps), the returned mean is 0, and the backward drops its mean(g) term. One kernel for both:
// the passes are the same, and a flag costs one branch per row.
// Numerics: statistics in the input's precision (float32 or float64), partial sums in vector lanes combined in a fixed
// order and finished in double; the variance as described at kMaxShift, within a small factor of the two-pass form's
// accuracy. Compiled for the host CPU (-march=native); native.py caches the library per machine.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// A 64-byte vector of T in GCC/Clang's vector extension: one AVX-512 register, two AVX2 or four SSE registers,
// whatever the build targets (it is compiled for the host, -march=native). Sums run in four such accumulators, enough
// independent addition chains to hide the adder's latency, and always in the same order, so the result does not
// depend on the instruction set.
template <typename T>
using Vec __attribute__((vector_size(64))) = T;

template <typename T>
constexpr int64_t kWidth = 64 / sizeof(T);

template <typename T>
inline Vec<T> Load(const T* p) {
  Vec<T> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

// The lanes of a vector added as a tree of halves, with shuffles: a scalar loop over the lanes costs as much as the
// whole pass for rows of a few hundred features.
using Float8 __attribute__((vector_size(32))) = float;
using Float4 __attribute__((vector_size(16))) = float;
using Double4 __attribute__((vector_size(32))) = double;
using Double2 __attribute__((vector_size(16))) = double;

inline float HorizontalSum(Vec<float> v) {
  const Float8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                   __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const Float4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}

inline double HorizontalSum(Vec<double> v) {
  const Double4 a = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  const Double2 b = __builtin_shufflevector(a, a, 0, 1) + __builtin_shufflevector(a, a, 2, 3);
  return b[0] + b[1];
}

// The mean of the row's first vector of elements (or of all of them if fewer): the shift k of the one-pass variance.
template <typename T>
inline T ShiftEstimate(const T* v, int64_t n) {
  constexpr int64_t w = kWidth<T>;
  if (n >= w) return HorizontalSum(Load(v)) / static_cast<T>(w);
  double total = 0.0;
  for (int64_t j = 0; j < n; ++j) total += static_cast<double>(v[j]);
  return static_cast<T>(total / static_cast<double>(n));
}

// Sums of d = v[j] - k and of d * d for j < n, in one pass.
template <typename T>
inline void ShiftedSums(const T* v, int64_t n, T k, double& sum, double& sum_sq) {
  constexpr int64_t w = kWidth<T>;
  Vec<T> s0 = {}, s1 = {}, q0 = {}, q1 = {};
  int64_t j = 0;
  for (; j + 2 * w <= n; j += 2 * w) {
    const Vec<T> d0 = Load(v + j) - k, d1 = Load(v + j + w) - k;
    s0 += d0;
    s1 += d1;
    q0 += d0 * d0;
    q1 += d1 * d1;
  }
  for (; j + w <= n; j += w) {
    const Vec<T> d = Load(v + j) - k;
    s0 += d;
    q0 += d * d;
  }
  sum = static_cast<double>(HorizontalSum(s0 + s1));
  sum_sq = static_cast<double>(HorizontalSum(q0 + q1));
  for (; j < n; ++j) {
    const double d = static_cast<double>(v[j] - k);
    sum += d;
    sum_sq += d * d;
  }
}

// Sum of f(v[j]) for j < n; f maps a vector to a vector and a scalar to a scalar.
template <typename T, typename F>
inline double VecSum(const T* v, int64_t n, F f) {
  constexpr int64_t w = kWidth<T>;
  Vec<T> a0 = {}, a1 = {}, a2 = {}, a3 = {};
  int64_t j = 0;
  for (; j + 4 * w <= n; j += 4 * w) {
    a0 += f(Load(v + j));
    a1 += f(Load(v + j + w));
    a2 += f(Load(v + j + 2 * w));
    a3 += f(Load(v + j + 3 * w));
  }
  for (; j + w <= n; j += w) a0 += f(Load(v + j));
  double total = static_cast<double>(HorizontalSum((a0 + a1) + (a2 + a3)));
  for (; j < n; ++j) total += static_cast<double>(f(v[j]));
  return total;
}

// Work is split into chunks of at least kChunkElements elements, at most kMaxChunks of them, a partition that depends
// only on the shape, so results (the backward's column sums are added chunk by chunk) do not depend on the number of
// threads. Below about 64K elements a call runs on the calling thread alone: scheduling costs more than it saves.
constexpr int64_t kChunkElements = 1 << 16;
constexpr int64_t kMaxChunks = 64;

inline int64_t ChunkCount(int64_t rows, int64_t h) {
  return std::clamp<int64_t>(rows * h / kChunkElements, 1, std::min(rows, kMaxChunks));
}

inline int64_t ChunkBegin(int64_t chunk, int64_t chunks, int64_t rows) { return rows * chunk / chunks; }

// Runs f(chunk) for chunk in [0, chunks) on XLA's intra-op thread pool and the calling thread. Chunks are claimed from
// a shared counter; the caller claims them too and then waits only for chunks already running, so it cannot wait on a
// task the pool has not started (no deadlock when every pool thread is busy). The state is shared with the tasks,
// which may start after the caller has returned and then find nothing to claim.
template <typename F>
void ParallelChunks(ffi::ThreadPool& pool, int64_t chunks, const F& f) {
  // The caller is one of the workers: with a pool of n threads (n = the CPUs this process may use), n - 1 helpers.
  const int64_t helpers = std::min<int64_t>(pool.num_threads() - 1, chunks - 1);
  if (helpers <= 0) {
    for (int64_t c = 0; c < chunks; ++c) f(c);
    return;
  }
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto state = std::make_shared<State>();
  // f lives on the caller's stack: helpers call it only for a claimed chunk, and the caller returns only after every
  // claimed chunk is done, so f outlives every call.
  auto work = [state, chunks, &f] {
    for (int64_t c; (c = state->next.fetch_add(1)) < chunks;) {
      f(c);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([work] { work(); });
  work();
  while (state->done.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
}

// Rows are normalized kRows at a time, each pass over all rows of the block before the next pass. A row's passes form
// one long dependency chain (sum -> mean -> squared deviations -> rstd -> output); interleaving independent rows lets
// the core overlap the chains, and the output pass loads each vector of scale and bias once for all rows of the block
// instead of once a row. That matters at a few hundred features, where the kernel is bound by L1 loads rather than
// by memory. Rows of up to kBlockBytes go four at a time and longer ones one at a time: blocks of two or four rows
// measured slower at 768 and 1024 features (3200x400 forward with two-pass statistics: 1.87x the floor one row at a
// time, 1.58x four at a time).
constexpr int64_t kBlockBytes = 2048;

// The variance comes from one pass over the row shifted by k, var = E[(x-k)^2] - E[x-k]^2, whose rounding error
// relative to the variance grows like 1 + (mean-k)^2 / var. k is the mean of the row's first 64 bytes, typically a
// quarter of a standard deviation or less from the mean at 16 floats; when it is further than sqrt(kMaxShift) standard
// deviations (a row whose first features differ from the rest) the row gets the exact second pass
// mean((x - mean)^2), so the error stays within (1 + kMaxShift) times the two-pass form's.
constexpr double kMaxShift = 1.0;

template <int kRows, typename T>
inline void NormalizeBlock(const T* __restrict x, const T* __restrict s, const T* __restrict b, T* __restrict y,
                           T* __restrict mean_out, T* __restrict rstd_out, int64_t h, double eps, bool center) {
  T mean[kRows], rstd[kRows];
  for (int i = 0; i < kRows; ++i) {
    const T* row = x + i * h;
    if (!center) {  // RMS: no shift to estimate, one pass of squares.
      mean[i] = T(0);
      rstd[i] = static_cast<T>(1.0 / std::sqrt(VecSum(row, h, [](auto v) { return v * v; }) / h + eps));
      continue;
    }
    const T k = ShiftEstimate(row, h);
    double sum, sum_sq;
    ShiftedSums(row, h, k, sum, sum_sq);
    const double shift = sum / static_cast<double>(h);
    double var = sum_sq / static_cast<double>(h) - shift * shift;
    const T m = static_cast<T>(static_cast<double>(k) + shift);
    if (!(shift * shift <= kMaxShift * var)) {
      var = VecSum(row, h, [m](auto v) { return (v - m) * (v - m); }) / static_cast<double>(h);
    }
    mean[i] = m;
    rstd[i] = static_cast<T>(1.0 / std::sqrt(var + eps));
  }
  constexpr int64_t w = kWidth<T>;
  int64_t j = 0;
  for (; j + w <= h; j += w) {
    const Vec<T> sv = Load(s + j), bv = Load(b + j);
    for (int i = 0; i < kRows; ++i) {
      const Vec<T> out = (Load(x + i * h + j) - mean[i]) * rstd[i] * sv + bv;
      __builtin_memcpy(y + i * h + j, &out, sizeof(out));
    }
  }
  for (; j < h; ++j) {
    for (int i = 0; i < kRows; ++i) y[i * h + j] = (x[i * h + j] - mean[i]) * rstd[i] * s[j] + b[j];
  }
  for (int i = 0; i < kRows; ++i) {
    mean_out[i] = mean[i];
    rstd_out[i] = rstd[i];
  }
}

// Rows [begin, end) of x; parameter row p serves rows [p * rows_per_param, (p + 1) * rows_per_param).
template <typename T>
void NormalizeRows(const T* x, const T* scale, const T* bias, T* y, T* mean, T* rstd, int64_t begin, int64_t end,
                   int64_t h, int64_t rows_per_param, double eps, bool center) {
  const int64_t row_bytes = h * static_cast<int64_t>(sizeof(T));
  const int64_t block = row_bytes <= kBlockBytes ? 4 : 1;
  int64_t r = begin;
  while (r < end) {
    // A block never straddles two parameter rows (they differ only under vmap).
    const int64_t param = r / rows_per_param;
    const int64_t n = std::min({block, end - r, (param + 1) * rows_per_param - r});
    const T* s = scale + param * h;
    const T* b = bias + param * h;
    if (n == 4) {
      NormalizeBlock<4>(x + r * h, s, b, y + r * h, mean + r, rstd + r, h, eps, center);
    } else if (n >= 2) {
      NormalizeBlock<2>(x + r * h, s, b, y + r * h, mean + r, rstd + r, h, eps, center);
    } else {
      NormalizeBlock<1>(x + r * h, s, b, y + r * h, mean + r, rstd + r, h, eps, center);
    }
    r += n >= 4 ? 4 : n >= 2 ? 2 : 1;
  }
}

template <ffi::DataType D>
ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<D> x, ffi::Buffer<D> scale, ffi::Buffer<D> bias, double eps, bool center,
                   ffi::ResultBuffer<D> y, ffi::ResultBuffer<D> mean, ffi::ResultBuffer<D> rstd) {
  using T = ffi::NativeType<D>;
  if (x.dimensions().size() == 0) return ffi::Error::InvalidArgument("layer_norm kernel: x must have rank >= 1");
  const int64_t h = x.dimensions().back();
  const int64_t rows = h == 0 ? 0 : static_cast<int64_t>(x.element_count()) / h;
  const int64_t params = h == 0 ? 0 : static_cast<int64_t>(scale.element_count()) / h;
  if (h == 0 || rows == 0) return ffi::Error::Success();
  if (params == 0 || rows % params != 0 || bias.element_count() != scale.element_count() ||
      scale.dimensions().back() != h) {
    return ffi::Error::InvalidArgument("layer_norm kernel: scale and bias must be (..., H) with rows dividing x's");
  }
  const int64_t chunks = ChunkCount(rows, h);
  ParallelChunks(pool, chunks, [&](int64_t c) {
    NormalizeRows<T>(x.typed_data(), scale.typed_data(), bias.typed_data(), y->typed_data(), mean->typed_data(),
                     rstd->typed_data(), ChunkBegin(c, chunks, rows), ChunkBegin(c + 1, chunks, rows), h,
                     rows / params, eps, center);
  });
  return ffi::Error::Success();
}

// The backward of y = xhat * scale + bias, xhat = (x - mean) * rstd, for one cotangent dy:
//   g = dy * scale,  dx = rstd * (g - mean(g) - xhat * mean(g * xhat))  (RMS, !center: without the mean(g) term),
//   dscale = sum over rows of dy * xhat,  dbias = sum over rows of dy  (per parameter row).
// Two passes over each row, the second from L1: the row means, then dx and the column sums. The column sums are kept
// in T for kFlushRows rows at a time and then added into double, so their rounding error grows with
// kFlushRows + rows / kFlushRows, not with the number of rows.
constexpr int64_t kFlushRows = 64;

// Rows [0, rows) of one parameter group; adds their column sums into total_s and total_b.
template <typename T>
void BackwardRows(const T* __restrict x, const T* __restrict mean, const T* __restrict rstd, const T* __restrict s,
                  const T* __restrict dy, T* __restrict dx, double* __restrict total_s, double* __restrict total_b,
                  int64_t rows, int64_t h, bool center) {
  constexpr int64_t w = kWidth<T>;
  std::vector<T> part_s(h), part_b(h);
  for (int64_t r0 = 0; r0 < rows; r0 += kFlushRows) {
    std::fill(part_s.begin(), part_s.end(), T(0));
    std::fill(part_b.begin(), part_b.end(), T(0));
    T* __restrict ps = part_s.data();
    T* __restrict pb = part_b.data();
    for (int64_t r = r0; r < std::min(rows, r0 + kFlushRows); ++r) {
      const T* __restrict xr = x + r * h;
      const T* __restrict dyr = dy + r * h;
      T* __restrict dxr = dx + r * h;
      const T m = mean[r], rs = rstd[r];
      // Pass 1: sum(g) and sum(g * xhat).
      Vec<T> g0 = {}, g1 = {}, c0 = {}, c1 = {};
      int64_t j = 0;
      for (; j + 2 * w <= h; j += 2 * w) {
        const Vec<T> ga = Load(dyr + j) * Load(s + j), gb = Load(dyr + j + w) * Load(s + j + w);
        g0 += ga;
        g1 += gb;
        c0 += ga * ((Load(xr + j) - m) * rs);
        c1 += gb * ((Load(xr + j + w) - m) * rs);
      }
      for (; j + w <= h; j += w) {
        const Vec<T> ga = Load(dyr + j) * Load(s + j);
        g0 += ga;
        c0 += ga * ((Load(xr + j) - m) * rs);
      }
      double sum_g = HorizontalSum(g0 + g1), sum_gx = HorizontalSum(c0 + c1);
      for (; j < h; ++j) {
        const T g = dyr[j] * s[j];
        sum_g += g;
        sum_gx += g * ((xr[j] - m) * rs);
      }
      const T mean_g = center ? static_cast<T>(sum_g / static_cast<double>(h)) : T(0);
      const T mean_gx = static_cast<T>(sum_gx / static_cast<double>(h));
      // Pass 2: dx and the column sums.
      j = 0;
      for (; j + w <= h; j += w) {
        const Vec<T> xh = (Load(xr + j) - m) * rs, d = Load(dyr + j);
        const Vec<T> out = rs * (d * Load(s + j) - mean_g - xh * mean_gx);
        __builtin_memcpy(dxr + j, &out, sizeof(out));
        const Vec<T> new_s = Load(ps + j) + d * xh, new_b = Load(pb + j) + d;
        __builtin_memcpy(ps + j, &new_s, sizeof(new_s));
        __builtin_memcpy(pb + j, &new_b, sizeof(new_b));
      }
      for (; j < h; ++j) {
        const T xh = (xr[j] - m) * rs;
        dxr[j] = rs * (dyr[j] * s[j] - mean_g - xh * mean_gx);
        ps[j] += dyr[j] * xh;
        pb[j] += dyr[j];
      }
    }
    for (int64_t j = 0; j < h; ++j) {
      total_s[j] += static_cast<double>(ps[j]);
      total_b[j] += static_cast<double>(pb[j]);
    }
  }
}

// Shapes as Forward's: x, dy, dx (..., H) as R rows; mean, rstd one per row; scale, dscale, dbias S rows of H.
template <ffi::DataType D>
ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<D> x, ffi::Buffer<D> mean, ffi::Buffer<D> rstd,
                    ffi::Buffer<D> scale, ffi::Buffer<D> dy, bool center, ffi::ResultBuffer<D> dx, ffi::ResultBuffer<D> dscale,
                    ffi::ResultBuffer<D> dbias) {
  using T = ffi::NativeType<D>;
  if (x.dimensions().size() == 0) return ffi::Error::InvalidArgument("layer_norm kernel: x must have rank >= 1");
  const int64_t h = x.dimensions().back();
  if (h == 0) return ffi::Error::Success();
  const int64_t rows = static_cast<int64_t>(x.element_count()) / h;
  const int64_t params = static_cast<int64_t>(scale.element_count()) / h;
  if (params == 0 || rows % params != 0 || static_cast<int64_t>(mean.element_count()) != rows ||
      dy.element_count() != x.element_count()) {
    return ffi::Error::InvalidArgument("layer_norm backward kernel: operand shapes do not match");
  }
  const int64_t per = rows / params;
  const int64_t chunks = ChunkCount(per, h);
  // Column sums per chunk in double, added in chunk order below.
  std::vector<double> totals(2 * chunks * h);
  for (int64_t p = 0; p < params; ++p) {
    std::fill(totals.begin(), totals.end(), 0.0);
    const int64_t first = p * per;
    ParallelChunks(pool, chunks, [&](int64_t c) {
      const int64_t begin = first + ChunkBegin(c, chunks, per), end = first + ChunkBegin(c + 1, chunks, per);
      BackwardRows<T>(x.typed_data() + begin * h, mean.typed_data() + begin, rstd.typed_data() + begin,
                      scale.typed_data() + p * h, dy.typed_data() + begin * h, dx->typed_data() + begin * h,
                      totals.data() + 2 * c * h, totals.data() + (2 * c + 1) * h, end - begin, h, center);
    });
    for (int64_t j = 0; j < h; ++j) {
      double sum_s = 0.0, sum_b = 0.0;
      for (int64_t c = 0; c < chunks; ++c) {
        sum_s += totals[2 * c * h + j];
        sum_b += totals[(2 * c + 1) * h + j];
      }
      dscale->typed_data()[p * h + j] = static_cast<T>(sum_s);
      dbias->typed_data()[p * h + j] = static_cast<T>(sum_b);
    }
  }
  return ffi::Error::Success();
}

}  // namespace

#define LAYERNORM_DEFINE(DTYPE, FORWARD, BACKWARD)                                                  \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(FORWARD, Forward<DTYPE>,                                             \
                                ffi::Ffi::Bind()                                                     \
                                    .Ctx<ffi::ThreadPool>()                                          \
                                    .Arg<ffi::Buffer<DTYPE>>() /* x */                               \
                                    .Arg<ffi::Buffer<DTYPE>>() /* scale */                           \
                                    .Arg<ffi::Buffer<DTYPE>>() /* bias */                            \
                                    .Attr<double>("eps")                                             \
                                    .Attr<bool>("center")                                            \
                                    .Ret<ffi::Buffer<DTYPE>>() /* y */                               \
                                    .Ret<ffi::Buffer<DTYPE>>() /* mean */                            \
                                    .Ret<ffi::Buffer<DTYPE>>() /* rstd */);                          \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(BACKWARD, Backward<DTYPE>,                                           \
                                ffi::Ffi::Bind()                                                     \
                                    .Ctx<ffi::ThreadPool>()                                          \
                                    .Arg<ffi::Buffer<DTYPE>>() /* x */                               \
                                    .Arg<ffi::Buffer<DTYPE>>() /* mean */                            \
                                    .Arg<ffi::Buffer<DTYPE>>() /* rstd */                            \
                                    .Arg<ffi::Buffer<DTYPE>>() /* scale */                           \
                                    .Arg<ffi::Buffer<DTYPE>>() /* dy */                              \
                                    .Attr<bool>("center")                                            \
                                    .Ret<ffi::Buffer<DTYPE>>() /* dx */                              \
                                    .Ret<ffi::Buffer<DTYPE>>() /* dscale */                          \
                                    .Ret<ffi::Buffer<DTYPE>>() /* dbias */)

LAYERNORM_DEFINE(ffi::F32, LayerNormForwardF32, LayerNormBackwardF32);
LAYERNORM_DEFINE(ffi::F64, LayerNormForwardF64, LayerNormBackwardF64);
