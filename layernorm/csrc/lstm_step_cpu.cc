// One time step of the LSTM and of the layer-normalized LSTM (appendix eq. 20-22) for XLA:CPU, forward and backward,
// everything of the step except its matmul, called through the XLA FFI (layernorm/native.py builds and registers
// this file with layer_norm_cpu.cc; layernorm/fused_lstm.py runs it inside lax.scan and is its only caller).
//
// Why: in a scan, XLA:CPU runs each step's element-wise work as a dozen or more separate loops (kernels) over (B, 4H)
// arrays, plus the layer norms' reductions, and at the reader's size (B = 64, H = 128) each of them costs more in
// launch and memory traffic than in arithmetic: the LN-LSTM's step cost 30-45 % more than the LSTM's. Here the whole
// step after the matmul is one pass over each row, in L1: the forward is one kernel, the backward one kernel.
//
// Forward, per row b, with gx = LN(W_x x) (+ nothing: computed for all steps at once outside the scan) and
// gh = W_h h_prev (the step's matmul):
//   a = gx + LN_h(gh) + bias        (without ln: a = gx + gh + bias); gates (i, f, g, o) are a's four H blocks
//   c = sigmoid(f) * c_prev + sigmoid(i) * tanh(g)
//   h = sigmoid(o) * tanh(LN_c(c))  (without ln: tanh(c))
// and the step is kept only where t < lengths[b]: elsewhere (padding) c and h stay c_prev and h_prev and the output
// is 0, as layernorm.unroll does.
// Backward: the transpose of that step at cotangents (dc, dh) of the carry and dy of the output, recomputing the
// step's activations from (gx, gh, c_prev) instead of storing them: d gx (= d a), d gh (through LN_h), d c_prev, the
// part of d h_prev that skips the step (dh where the row is padding, else 0; the rest is d gh W_h^T, a matmul left to
// XLA), and this step's sums over rows of the LN gains' and biases' cotangents (d bias = sum of d gx is left to XLA,
// once for all steps).
//
// Numerics: float32; LN statistics two-pass in float32 with double-precision row sums; exp by a Cephes-style
// polynomial (within 2 ulp of expf), sigmoid(x) = 1 / (1 + exp(-x)), tanh(x) = 1 - 2 / (exp(2x) + 1) (absolute error
// about 1e-7 near 0, where XLA's tanh is exact to rounding).

#include <algorithm>
#include <cmath>
#include <cstdint>
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
inline Vf Tanh(Vf x) { return 1.0f - 2.0f / (Exp(2.0f * x) + 1.0f); }

// The scalar forms, for the tail of a row whose width is not a multiple of 16: the same formulas, one lane.
inline float Exp(float x) { return Exp(Splat(x))[0]; }
inline float Sigmoid(float x) { return 1.0f / (1.0f + Exp(-x)); }
inline float Tanh(float x) { return 1.0f - 2.0f / (Exp(2.0f * x) + 1.0f); }

inline float HorizontalSum(Vf v) {
  float total = 0.0f;
  for (int k = 0; k < kW; ++k) total += v[k];
  return total;
}

// Mean and 1 / sqrt(var + eps) of a row, two passes, sums in vector lanes finished in double.
inline void RowStats(const float* v, int64_t n, double eps, float& mean, float& rstd) {
  Vf s = {};
  int64_t j = 0;
  for (; j + kW <= n; j += kW) s += LoadV(v + j);
  double total = HorizontalSum(s);
  for (; j < n; ++j) total += v[j];
  mean = static_cast<float>(total / n);
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

struct Params {
  const float *bias, *scale_h, *bias_h, *scale_c, *bias_c;
};

// The step's activations for one row: a's gates after their non-linearities, c, and LN_c's normalized c (or c).
// Scratch rows: act (4H: sigmoid i, sigmoid f, tanh g, sigmoid o), ghat (4H: LN_h's normalized gh), c_new, chat (H).
struct Row {
  float* act;
  float* ghat;
  float* c_new;
  float* chat;
  float rstd_h, rstd_c;
};

inline void StepActivations(const float* gx, const float* gh, const float* c_prev, const Params& p, int64_t hidden,
                            double eps, bool ln, Row& row) {
  const int64_t h4 = 4 * hidden;
  float mean_h = 0.0f, rstd_h = 1.0f;
  if (ln) RowStats(gh, h4, eps, mean_h, rstd_h);
  row.rstd_h = rstd_h;
  // Block by block, so that a vector never straddles two gates whatever H is: block 2 (g) is a tanh, the others
  // sigmoids.
  for (int64_t k = 0; k < 4; ++k) {
    const int64_t o = k * hidden;
    Columns(hidden, [&](int64_t j, auto width) {
      constexpr int w = decltype(width)::value;
      using L = Lane<w>;
      L a = Ld<w>(gx + o + j) + Ld<w>(p.bias + o + j);
      if (ln) {
        const L hat = (Ld<w>(gh + o + j) - mean_h) * rstd_h;
        St<w>(row.ghat + o + j, hat);
        a += hat * Ld<w>(p.scale_h + o + j) + Ld<w>(p.bias_h + o + j);
      } else {
        a += Ld<w>(gh + o + j);
      }
      St<w>(row.act + o + j, k == 2 ? Tanh(a) : Sigmoid(a));
    });
  }
  const float *si = row.act, *sf = row.act + hidden, *tg = row.act + 2 * hidden;
  Columns(hidden, [&](int64_t j, auto width) {
    constexpr int w = decltype(width)::value;
    St<w>(row.c_new + j, Ld<w>(sf + j) * Ld<w>(c_prev + j) + Ld<w>(si + j) * Ld<w>(tg + j));
  });
  float mean_c = 0.0f, rstd_c = 1.0f;
  if (ln) RowStats(row.c_new, hidden, eps, mean_c, rstd_c);
  row.rstd_c = rstd_c;
  Columns(hidden, [&](int64_t j, auto width) {
    constexpr int w = decltype(width)::value;
    St<w>(row.chat + j, ln ? (Ld<w>(row.c_new + j) - mean_c) * rstd_c : Ld<w>(row.c_new + j));
  });
}

// Scratch for one row, reused across rows of a call.
struct Scratch {
  std::vector<float> data;
  Row row;
  float* tmp;  // 4H more, for the backward's d a
  explicit Scratch(int64_t hidden) : data(14 * hidden) {
    float* d = data.data();
    row.act = d;
    row.ghat = d + 4 * hidden;
    row.c_new = d + 8 * hidden;
    row.chat = d + 9 * hidden;
    tmp = d + 10 * hidden;
  }
};

ffi::Error CheckShapes(int64_t batch, int64_t hidden, const ffi::Buffer<ffi::F32>& gx, const ffi::Buffer<ffi::F32>& gh,
                       const ffi::Buffer<ffi::F32>& c_prev, const ffi::Buffer<ffi::S32>& lengths,
                       const ffi::Buffer<ffi::F32>& bias, const ffi::Buffer<ffi::F32>& scale_c) {
  if (gx.element_count() != static_cast<size_t>(batch * 4 * hidden) || gh.element_count() != gx.element_count() ||
      lengths.element_count() != static_cast<size_t>(batch) || bias.element_count() != static_cast<size_t>(4 * hidden) ||
      scale_c.element_count() != static_cast<size_t>(hidden)) {
    return ffi::Error::InvalidArgument("lstm step kernel: operand shapes do not match (B, 4H) / (B, H) / (B,)");
  }
  return ffi::Error::Success();
}

// The step kernels run on the calling thread: splitting the rows of one step over XLA's thread pool (two threads
// here) measured no faster at batch 64, H = 128, where a step's kernel takes 25-40 us.
ffi::Error StepForward(ffi::Buffer<ffi::F32> gx, ffi::Buffer<ffi::F32> gh,
                       ffi::Buffer<ffi::F32> c_prev, ffi::Buffer<ffi::F32> h_prev, ffi::Buffer<ffi::S32> lengths,
                       ffi::Buffer<ffi::S32> step, ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> scale_h,
                       ffi::Buffer<ffi::F32> bias_h, ffi::Buffer<ffi::F32> scale_c, ffi::Buffer<ffi::F32> bias_c,
                       double eps, bool ln, ffi::ResultBuffer<ffi::F32> c_out, ffi::ResultBuffer<ffi::F32> h_out,
                       ffi::ResultBuffer<ffi::F32> y_out) {
  const auto dims = c_prev.dimensions();
  if (dims.size() != 2) return ffi::Error::InvalidArgument("lstm step kernel: the carry must be (B, H)");
  const int64_t batch = dims[0], hidden = dims[1];
  if (auto e = CheckShapes(batch, hidden, gx, gh, c_prev, lengths, bias, scale_c); e.failure()) return e;
  const Params p{bias.typed_data(), scale_h.typed_data(), bias_h.typed_data(), scale_c.typed_data(),
                 bias_c.typed_data()};
  const int32_t t = step.typed_data()[0];
  {
    Scratch scratch(hidden);
    Row& row = scratch.row;
    for (int64_t b = 0; b < batch; ++b) {
      const float* cp = c_prev.typed_data() + b * hidden;
      const float* hp = h_prev.typed_data() + b * hidden;
      float* co = c_out->typed_data() + b * hidden;
      float* ho = h_out->typed_data() + b * hidden;
      float* yo = y_out->typed_data() + b * hidden;
      if (t >= lengths.typed_data()[b]) {  // padding: carry unchanged, output 0
        std::copy(cp, cp + hidden, co);
        std::copy(hp, hp + hidden, ho);
        std::fill(yo, yo + hidden, 0.0f);
        continue;
      }
      StepActivations(gx.typed_data() + b * 4 * hidden, gh.typed_data() + b * 4 * hidden, cp, p, hidden, eps, ln,
                      row);
      const float* so = row.act + 3 * hidden;
      Columns(hidden, [&](int64_t j, auto width) {
        constexpr int w = decltype(width)::value;
        auto cn = Ld<w>(row.chat + j);
        if (ln) cn = cn * Ld<w>(p.scale_c + j) + Ld<w>(p.bias_c + j);
        const auto h = Ld<w>(so + j) * Tanh(cn);
        St<w>(co + j, Ld<w>(row.c_new + j));
        St<w>(ho + j, h);
        St<w>(yo + j, h);
      });
    }
  }
  return ffi::Error::Success();
}

// LN backward of one row in place: given g = dy * scale in `g` and xhat, writes dx = rstd * (g - mean(g) - xhat *
// mean(g * xhat)) into `out`.
inline void LayerNormRowBackward(const float* g, const float* xhat, float rstd, int64_t n, float* out) {
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
  const float mean_g = static_cast<float>(sum_g / n), mean_gx = static_cast<float>(sum_gx / n);
  Columns(n, [&](int64_t k, auto width) {
    constexpr int w = decltype(width)::value;
    St<w>(out + k, rstd * (Ld<w>(g + k) - mean_g - Ld<w>(xhat + k) * mean_gx));
  });
}

// The backward of rows [begin, end); adds their column sums of d scale_h, d scale_c, d bias_c into the sums.
void BackwardRows(const float* gx, const float* gh, const float* c_prev, const float* dc, const float* dh,
                  const float* dy, const int32_t* lengths, int32_t t, const Params& p, int64_t hidden, double eps,
                  bool ln, int64_t begin, int64_t end, float* dgx, float* dgh, float* dc_prev, float* dh_skip,
                  double* sum_sh, double* sum_sc, double* sum_bc) {
  const int64_t h4 = 4 * hidden;
  Scratch scratch(hidden);
  Row& row = scratch.row;
  float* da = scratch.tmp;             // 4H: d a (the gates' pre-activations)
  std::vector<float> dcn(2 * hidden);  // d of LN_c's output, then d c_new
  // Column sums in float for 64 rows at a time, then into double (as layer_norm_cpu.cc's backward).
  std::vector<float> part_sh(h4, 0.0f), part_sc(hidden, 0.0f), part_bc(hidden, 0.0f);
  auto flush = [&] {
    for (int64_t j = 0; j < h4; ++j) sum_sh[j] += part_sh[j], part_sh[j] = 0.0f;
    for (int64_t j = 0; j < hidden; ++j) {
      sum_sc[j] += part_sc[j], sum_bc[j] += part_bc[j];
      part_sc[j] = part_bc[j] = 0.0f;
    }
  };
  for (int64_t b = begin; b < end; ++b) {
    if (b > begin && (b - begin) % 64 == 0) flush();
    const float* cp = c_prev + b * hidden;
    const float* dcr = dc + b * hidden;
    const float* dhr = dh + b * hidden;
    float* dgx_r = dgx + b * h4;
    float* dgh_r = dgh + b * h4;
    float* dcp = dc_prev + b * hidden;
    float* dhs = dh_skip + b * hidden;
    if (t >= lengths[b]) {  // padding: the cotangents pass the step untouched
      std::fill(dgx_r, dgx_r + h4, 0.0f);
      std::fill(dgh_r, dgh_r + h4, 0.0f);
      std::copy(dcr, dcr + hidden, dcp);
      std::copy(dhr, dhr + hidden, dhs);
      continue;
    }
    std::fill(dhs, dhs + hidden, 0.0f);
    StepActivations(gx + b * h4, gh + b * h4, cp, p, hidden, eps, ln, row);
    const float *si = row.act, *sf = row.act + hidden, *tg = row.act + 2 * hidden, *so = row.act + 3 * hidden;
    const float* dyr = dy + b * hidden;
    float* d_cn = dcn.data();        // cotangent of LN_c's output (tanh's input)
    float* d_c = dcn.data() + hidden;  // cotangent of c_new
    // h = so * tanh(cn): d so and d cn.
    Columns(hidden, [&](int64_t j, auto width) {
      constexpr int w = decltype(width)::value;
      auto cn = Ld<w>(row.chat + j);
      if (ln) cn = cn * Ld<w>(p.scale_c + j) + Ld<w>(p.bias_c + j);
      const auto th = Tanh(cn);
      const auto dhn = Ld<w>(dhr + j) + Ld<w>(dyr + j);
      const auto o = Ld<w>(so + j);
      St<w>(da + 3 * hidden + j, dhn * th * o * (1.0f - o));
      const auto dcn_j = dhn * o * (1.0f - th * th);
      if (ln) {
        St<w>(part_sc.data() + j, Ld<w>(part_sc.data() + j) + dcn_j * Ld<w>(row.chat + j));
        St<w>(part_bc.data() + j, Ld<w>(part_bc.data() + j) + dcn_j);
        St<w>(d_cn + j, dcn_j * Ld<w>(p.scale_c + j));
      } else {
        St<w>(d_c + j, dcn_j);
      }
    });
    if (ln) LayerNormRowBackward(d_cn, row.chat, row.rstd_c, hidden, d_c);
    // c = sf * c_prev + si * tg: d c_prev and the gates' pre-activations.
    Columns(hidden, [&](int64_t j, auto width) {
      constexpr int w = decltype(width)::value;
      const auto dct = Ld<w>(d_c + j) + Ld<w>(dcr + j);
      const auto i = Ld<w>(si + j), f = Ld<w>(sf + j), g = Ld<w>(tg + j);
      St<w>(dcp + j, dct * f);
      St<w>(da + j, dct * g * i * (1.0f - i));
      St<w>(da + hidden + j, dct * Ld<w>(cp + j) * f * (1.0f - f));
      St<w>(da + 2 * hidden + j, dct * i * (1.0f - g * g));
    });
    std::copy(da, da + h4, dgx_r);
    if (ln) {
      // a = gx + ghat * scale_h + bias_h + bias: d scale_h += da * ghat; d gh = LN_h's backward of da * scale_h.
      Columns(h4, [&](int64_t j, auto width) {
        constexpr int w = decltype(width)::value;
        const auto d = Ld<w>(da + j);
        St<w>(part_sh.data() + j, Ld<w>(part_sh.data() + j) + d * Ld<w>(row.ghat + j));
        St<w>(da + j, d * Ld<w>(p.scale_h + j));
      });
      LayerNormRowBackward(da, row.ghat, row.rstd_h, h4, dgh_r);
    } else {
      std::copy(da, da + h4, dgh_r);
    }
  }
  flush();
}

ffi::Error StepBackward(ffi::Buffer<ffi::F32> gx, ffi::Buffer<ffi::F32> gh,
                        ffi::Buffer<ffi::F32> c_prev, ffi::Buffer<ffi::F32> dc, ffi::Buffer<ffi::F32> dh,
                        ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::S32> lengths, ffi::Buffer<ffi::S32> step,
                        ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> scale_h, ffi::Buffer<ffi::F32> bias_h,
                        ffi::Buffer<ffi::F32> scale_c, ffi::Buffer<ffi::F32> bias_c, double eps, bool ln,
                        ffi::ResultBuffer<ffi::F32> dgx, ffi::ResultBuffer<ffi::F32> dgh,
                        ffi::ResultBuffer<ffi::F32> dc_prev, ffi::ResultBuffer<ffi::F32> dh_skip,
                        ffi::ResultBuffer<ffi::F32> dscale_h, ffi::ResultBuffer<ffi::F32> dscale_c,
                        ffi::ResultBuffer<ffi::F32> dbias_c) {
  const auto dims = c_prev.dimensions();
  if (dims.size() != 2) return ffi::Error::InvalidArgument("lstm step kernel: the carry must be (B, H)");
  const int64_t batch = dims[0], hidden = dims[1], h4 = 4 * hidden;
  if (auto e = CheckShapes(batch, hidden, gx, gh, c_prev, lengths, bias, scale_c); e.failure()) return e;
  const Params p{bias.typed_data(), scale_h.typed_data(), bias_h.typed_data(), scale_c.typed_data(),
                 bias_c.typed_data()};
  const int32_t t = step.typed_data()[0];
  const int64_t stride = 6 * hidden;  // column sums of d scale_h (4H), d scale_c (H), d bias_c (H), in double
  std::vector<double> sums(stride, 0.0);
  BackwardRows(gx.typed_data(), gh.typed_data(), c_prev.typed_data(), dc.typed_data(), dh.typed_data(),
               dy.typed_data(), lengths.typed_data(), t, p, hidden, eps, ln, 0, batch, dgx->typed_data(),
               dgh->typed_data(), dc_prev->typed_data(), dh_skip->typed_data(), sums.data(), sums.data() + h4,
               sums.data() + 5 * hidden);
  for (int64_t j = 0; j < stride; ++j) {
    const double total = sums[j];
    float* out = j < h4 ? dscale_h->typed_data() + j
                 : j < 5 * hidden ? dscale_c->typed_data() + (j - h4)
                                  : dbias_c->typed_data() + (j - 5 * hidden);
    *out = static_cast<float>(total);
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmStepForwardF32, StepForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // gx (B, 4H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // gh (B, 4H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c_prev (B, H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h_prev (B, H)
                                  .Arg<ffi::Buffer<ffi::S32>>()  // lengths (B,)
                                  .Arg<ffi::Buffer<ffi::S32>>()  // t ()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // bias (4H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // scale_h (4H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // bias_h (4H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // scale_c (H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // bias_c (H)
                                  .Attr<double>("eps")
                                  .Attr<bool>("ln")
                                  .Ret<ffi::Buffer<ffi::F32>>()  // c (B, H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // h (B, H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // y (B, H)
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmStepBackwardF32, StepBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // gx
                                  .Arg<ffi::Buffer<ffi::F32>>()  // gh
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c_prev
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dc
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dh
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dy
                                  .Arg<ffi::Buffer<ffi::S32>>()  // lengths
                                  .Arg<ffi::Buffer<ffi::S32>>()  // t
                                  .Arg<ffi::Buffer<ffi::F32>>()  // bias
                                  .Arg<ffi::Buffer<ffi::F32>>()  // scale_h
                                  .Arg<ffi::Buffer<ffi::F32>>()  // bias_h
                                  .Arg<ffi::Buffer<ffi::F32>>()  // scale_c
                                  .Arg<ffi::Buffer<ffi::F32>>()  // bias_c
                                  .Attr<double>("eps")
                                  .Attr<bool>("ln")
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d gx (B, 4H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d gh (B, 4H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d c_prev (B, H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d h_prev's skip part (B, H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d scale_h (4H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d scale_c (H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d bias_c (H)
);
