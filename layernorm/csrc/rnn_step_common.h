// What the recurrent step kernels share (lstm_step_cpu.cc, gru_step_cpu.cc): vector exp, sigmoid and tanh, a row's
// layer-norm (or, without `center`, RMS-norm) statistics and backward, the column loop that handles a tail narrower
// than a vector, and the per-step sums of the parameters' cotangents. Header-only, in an anonymous namespace: each
// kernel file gets its own inlined copy.
//
// Numerics: float32; LN statistics two-pass in float32 with double-precision row sums (RMS norm: one pass, the mean
// square); exp by a Cephes-style
// polynomial (within 2 ulp of expf), sigmoid(x) = 1 / (1 + exp(-x)), tanh(x) by Cephes' polynomial near 0 and
// 1 - 2 / (exp(2x) + 1) elsewhere.

#ifndef LAYERNORM_CSRC_RNN_STEP_COMMON_H_
#define LAYERNORM_CSRC_RNN_STEP_COMMON_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using Vf __attribute__((vector_size(64))) = float;
using Vi __attribute__((vector_size(64))) = int32_t;
constexpr int64_t kW = 16;

inline Vf LoadV(const float* p) {
  Vf v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void StoreV(float* p, Vf v) { __builtin_memcpy(p, &v, sizeof(v)); }
inline Vf Splat(float x) { return Vf{} + x; }

// exp, the Cephes single-precision method: 2^n * P(r), r = x - n ln 2 in two parts.
inline Vf Exp(Vf x) {
  x = x < Splat(88.3762626647949f) ? x : Splat(88.3762626647949f);
  x = x > Splat(-87.3365478515625f) ? x : Splat(-87.3365478515625f);
  Vf fx = x * 1.44269504088896341f + 0.5f;
  Vi n = __builtin_convertvector(fx, Vi);  // truncation; floor below
  Vf nf = __builtin_convertvector(n, Vf);
  const Vi over = nf > fx;  // -1 where truncation rounded up (negative fx)
  n += over;
  nf = __builtin_convertvector(n, Vf);
  const Vf r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
  Vf p = Splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const Vf y = p * r * r + r + 1.0f;
  const Vi bits = (n + 127) << 23;
  Vf scale;
  __builtin_memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}
inline Vf Sigmoid(Vf x) { return 1.0f / (1.0f + Exp(-x)); }
// tanh: for |x| < 0.625 Cephes' odd polynomial x + x^3 P(x^2) (1 - 2 / (exp(2x) + 1) loses its relative accuracy
// there to cancellation: an absolute error of about 1e-7, which at the small activations of a freshly initialized
// GRU, |h| ~ 0.01, was a relative error of 1e-5), else 1 - 2 / (exp(2x) + 1).
inline Vf Tanh(Vf x) {
  const Vf z = x * x;
  Vf p = Splat(-5.70498872745e-3f);
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const Vf small = p * z * x + x;
  const Vf large = 1.0f - 2.0f / (Exp(2.0f * x) + 1.0f);
  const Vf ax = x < Splat(0.0f) ? -x : x;
  return ax < Splat(0.625f) ? small : large;
}

// The scalar forms, for the tail of a row whose width is not a multiple of 16: the same formulas, one lane.
inline float Exp(float x) { return Exp(Splat(x))[0]; }
inline float Sigmoid(float x) { return 1.0f / (1.0f + Exp(-x)); }
inline float Tanh(float x) { return Tanh(Splat(x))[0]; }

inline float HorizontalSum(Vf v) {
  float total = 0.0f;
  for (int k = 0; k < kW; ++k) total += v[k];
  return total;
}

// Mean and 1 / sqrt(var + eps) of a row, two passes, sums in vector lanes finished in double. Without `center` (RMS
// norm, Zhang & Sennrich 2019) the mean is taken as 0, so the one pass left gives 1 / sqrt(mean(v^2) + eps), as
// layer_norm_cpu.cc's kernels do with center=false.
inline void RowStats(const float* v, int64_t n, double eps, bool center, float& mean, float& rstd) {
  mean = 0.0f;
  int64_t j = 0;
  if (center) {
    Vf s = {};
    for (; j + kW <= n; j += kW) s += LoadV(v + j);
    double total = HorizontalSum(s);
    for (; j < n; ++j) total += v[j];
    mean = static_cast<float>(total / n);
  }
  Vf q = {};
  j = 0;
  for (; j + kW <= n; j += kW) {
    const Vf d = LoadV(v + j) - mean;
    q += d * d;
  }
  double sq = HorizontalSum(q);
  for (; j < n; ++j) sq += (v[j] - mean) * (v[j] - mean);
  rstd = static_cast<float>(1.0 / std::sqrt(sq / n + eps));
}

// Applies f(j, width) to the columns [0, n) in vectors of 16 (width kW) and then one at a time (width 1); f picks its
// vector or scalar path from the width, so each formula is written once.
template <typename F>
inline void Columns(int64_t n, F f) {
  int64_t j = 0;
  for (; j + kW <= n; j += kW) f(j, std::integral_constant<int, kW>{});
  for (; j < n; ++j) f(j, std::integral_constant<int, 1>{});
}

template <int kWidth>
using Lane = std::conditional_t<kWidth == 1, float, Vf>;

template <int kWidth>
inline Lane<kWidth> Ld(const float* p) {
  if constexpr (kWidth == 1) return *p;
  else return LoadV(p);
}
template <int kWidth>
inline void St(float* p, Lane<kWidth> v) {
  if constexpr (kWidth == 1) *p = v;
  else StoreV(p, v);
}

// LN backward of one row: given g = dy * scale and xhat, writes dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
// Without `center` (RMS norm: no mean was subtracted) the mean(g) term is dropped.
inline void LayerNormRowBackward(const float* g, const float* xhat, float rstd, int64_t n, bool center, float* out) {
  Vf s = {}, q = {};
  int64_t j = 0;
  for (; j + kW <= n; j += kW) {
    const Vf gv = LoadV(g + j);
    s += gv;
    q += gv * LoadV(xhat + j);
  }
  double sum_g = HorizontalSum(s), sum_gx = HorizontalSum(q);
  for (; j < n; ++j) {
    sum_g += g[j];
    sum_gx += g[j] * xhat[j];
  }
  const float mean_g = center ? static_cast<float>(sum_g / n) : 0.0f, mean_gx = static_cast<float>(sum_gx / n);
  Columns(n, [&](int64_t k, auto width) {
    constexpr int w = decltype(width)::value;
    St<w>(out + k, rstd * (Ld<w>(g + k) - mean_g - Ld<w>(xhat + k) * mean_gx));
  });
}

// LN backward of one row whose output's cotangent is d (n values), scale s: adds d * xhat into the scale's sum, d into
// the bias's, and writes the input's cotangent into out (g, n floats of scratch, holds d * s). `center` as in
// LayerNormRowBackward.
inline void LayerNormRowBackwardWithParams(const float* d, const float* xhat, float rstd, const float* s, int64_t n,
                                           bool center, float* sum_scale, float* sum_bias, float* g, float* out) {
  Columns(n, [&](int64_t j, auto width) {
    constexpr int w = decltype(width)::value;
    const auto dv = Ld<w>(d + j);
    St<w>(sum_scale + j, Ld<w>(sum_scale + j) + dv * Ld<w>(xhat + j));
    if (sum_bias != nullptr) St<w>(sum_bias + j, Ld<w>(sum_bias + j) + dv);
    St<w>(g + j, dv * Ld<w>(s + j));
  });
  LayerNormRowBackward(g, xhat, rstd, n, center, out);
}

// The sums over a step's rows of the parameters' cotangents (n floats): added in float for 64 rows at a time, then
// into double (as layer_norm_cpu.cc's backward does).
class ParamSums {
 public:
  explicit ParamSums(int64_t n) : part_(n, 0.0f), total_(n, 0.0) {}
  // The float accumulator at `offset`.
  float* at(int64_t offset) { return part_.data() + offset; }
  // Call before row b of the step.
  void StartRow(int64_t b) {
    if (b > 0 && b % 64 == 0) Flush();
  }
  // Flushes and writes the sums as float.
  void Write(float* out) {
    Flush();
    for (size_t j = 0; j < total_.size(); ++j) out[j] = static_cast<float>(total_[j]);
  }

 private:
  void Flush() {
    for (size_t j = 0; j < part_.size(); ++j) total_[j] += part_[j], part_[j] = 0.0f;
  }
  std::vector<float> part_;
  std::vector<double> total_;
};

}  // namespace

#endif  // LAYERNORM_CSRC_RNN_STEP_COMMON_H_
