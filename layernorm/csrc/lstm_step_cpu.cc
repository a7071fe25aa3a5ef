// One time step of the LSTM and of the layer-normalized LSTM (appendix eq. 20-22) for XLA:CPU, forward and backward,
// everything of the step except its matmuls, called through the XLA FFI (layernorm/native.py builds and registers
// this file with layer_norm_cpu.cc; layernorm/fused_lstm.py runs it inside lax.scan and is its only caller).
//
// Why: in a scan, XLA:CPU runs each step's element-wise work as a dozen or more separate loops (kernels) over (B, 4H)
// arrays, plus the layer norms' reductions, and at the attentive reader's size (B = 64, H = 128) each costs more in
// launch and memory traffic than in arithmetic: the LN-LSTM's step cost 30-45 % more than the LSTM's. Here the whole
// step after its matmuls is one pass over each row, in L1: the forward is one kernel, the backward one kernel, and
// all three layer norms (of W_x x, of W_h h and of c) happen inside them.
//
// Forward, per row b, with px = W_x x_t (computed for all steps at once outside the scan) and gh = W_h h_prev:
//   a = LN_x(px) + LN_h(gh) + bias       (without ln: a = px + gh + bias); gates (i, f, g, o) are a's four H blocks
//   c = sigmoid(f) * c_prev + sigmoid(i) * tanh(g)
//   h = sigmoid(o) * tanh(LN_c(c))       (without ln: tanh(c))
// with LN_k(v) = (v - mean) / sqrt(var + eps) * scale_k + bias_k, or without `center` the RMS norm of the RMS-LSTM
// (Zhang & Sennrich 2019), v / sqrt(mean(v^2) + eps) * scale_k + bias_k (its caller packs bias_k = 0: the RMS cells
// have gains only, see layernorm/cells.py); the step is kept only where t < lengths[b]: elsewhere
// (padding) c and h stay c_prev and h_prev and the output is 0, as layernorm.unroll does.
// Backward: the transpose of that step at cotangents (dc, dh) of the carry and dy of the output, recomputing the
// step's activations from (px, gh, c_prev) instead of storing them: d px, d gh, d c_prev, the part of d h_prev that
// skips the step (dh where the row is padding, else 0; the rest is d gh W_h^T, a matmul left to XLA), and this step's
// sums over rows of the parameters' cotangents.
// Parameters, packed in one vector of 22H (and their cotangents' sums likewise): bias, scale_x, bias_x, scale_h,
// bias_h (4H each), scale_c, bias_c (H each). Without ln only bias is used (the others' sums are 0).
//
// Numerics: those of rnn_step_common.h (float32, exp-based sigmoid and tanh, LN statistics two-pass). The step
// kernels run on the calling thread: splitting a step's rows over XLA's thread pool (two threads here) measured no
// faster at B = 64, H = 128 (25-40 us a call).

#include <algorithm>
#include <cstdint>
#include <vector>

#include "rnn_step_common.h"

namespace {

// Offsets of the packed parameters (and of their cotangents' sums), in units of H.
enum Offset : int64_t { kBias = 0, kScaleX = 4, kBiasX = 8, kScaleH = 12, kBiasH = 16, kScaleC = 20, kBiasC = 21 };
constexpr int64_t kParamRows = 22;

// A row's scratch and the step's activations: a's gates after their non-linearities (i, f, o sigmoids, g tanh), LN_x's
// and LN_h's normalized inputs, c and LN_c's normalized c (c itself without ln), and the three rstd.
struct Row {
  std::vector<float> data;
  float *act, *xhat, *ghat, *c_new, *chat, *da, *d_cn, *d_c;
  float rstd_x = 1.0f, rstd_h = 1.0f, rstd_c = 1.0f;
  explicit Row(int64_t hidden) : data(20 * hidden) {
    float* d = data.data();
    act = d, xhat = d + 4 * hidden, ghat = d + 8 * hidden, c_new = d + 12 * hidden, chat = d + 13 * hidden;
    da = d + 14 * hidden, d_cn = d + 18 * hidden, d_c = d + 19 * hidden;
  }
};

inline void StepActivations(const float* px, const float* gh, const float* c_prev, const float* params, int64_t hidden,
                            double eps, bool ln, bool center, Row& row) {
  const int64_t h4 = 4 * hidden;
  float mean_x = 0.0f, mean_h = 0.0f;
  if (ln) {
    RowStats(px, h4, eps, center, mean_x, row.rstd_x);
    RowStats(gh, h4, eps, center, mean_h, row.rstd_h);
  }
  const float* bias = params + kBias * hidden;
  const float *sx = params + kScaleX * hidden, *bx = params + kBiasX * hidden;
  const float *sh = params + kScaleH * hidden, *bh = params + kBiasH * hidden;
  // Block by block, so that a vector never straddles two gates whatever H is: block 2 (g) is a tanh, the others
  // sigmoids.
  for (int64_t k = 0; k < 4; ++k) {
    const int64_t o = k * hidden;
    Columns(hidden, [&](int64_t j, auto width) {
      constexpr int w = decltype(width)::value;
      const int64_t i = o + j;
      Lane<w> a = Ld<w>(bias + i);
      if (ln) {
        const Lane<w> xh = (Ld<w>(px + i) - mean_x) * row.rstd_x, hh = (Ld<w>(gh + i) - mean_h) * row.rstd_h;
        St<w>(row.xhat + i, xh);
        St<w>(row.ghat + i, hh);
        a += xh * Ld<w>(sx + i) + Ld<w>(bx + i) + hh * Ld<w>(sh + i) + Ld<w>(bh + i);
      } else {
        a += Ld<w>(px + i) + Ld<w>(gh + i);
      }
      St<w>(row.act + i, k == 2 ? Tanh(a) : Sigmoid(a));
    });
  }
  const float *si = row.act, *sf = row.act + hidden, *tg = row.act + 2 * hidden;
  Columns(hidden, [&](int64_t j, auto width) {
    constexpr int w = decltype(width)::value;
    St<w>(row.c_new + j, Ld<w>(sf + j) * Ld<w>(c_prev + j) + Ld<w>(si + j) * Ld<w>(tg + j));
  });
  float mean_c = 0.0f;
  if (ln) RowStats(row.c_new, hidden, eps, center, mean_c, row.rstd_c);
  Columns(hidden, [&](int64_t j, auto width) {
    constexpr int w = decltype(width)::value;
    St<w>(row.chat + j, ln ? (Ld<w>(row.c_new + j) - mean_c) * row.rstd_c : Ld<w>(row.c_new + j));
  });
}

// LN_c's output (tanh's input) at columns [j, j + w).
template <int w>
inline Lane<w> CellNormOut(const Row& row, const float* params, int64_t hidden, bool ln, int64_t j) {
  const Lane<w> chat = Ld<w>(row.chat + j);
  if (!ln) return chat;
  return chat * Ld<w>(params + kScaleC * hidden + j) + Ld<w>(params + kBiasC * hidden + j);
}

ffi::Error CheckShapes(const ffi::Buffer<ffi::F32>& px, const ffi::Buffer<ffi::F32>& gh,
                       const ffi::Buffer<ffi::F32>& c_prev, const ffi::Buffer<ffi::S32>& lengths,
                       const ffi::Buffer<ffi::F32>& params, int64_t& batch, int64_t& hidden) {
  const auto dims = c_prev.dimensions();
  if (dims.size() != 2) return ffi::Error::InvalidArgument("lstm step kernel: the carry must be (B, H)");
  batch = dims[0], hidden = dims[1];
  if (px.element_count() != static_cast<size_t>(batch * 4 * hidden) || gh.element_count() != px.element_count() ||
      lengths.element_count() != static_cast<size_t>(batch) ||
      params.element_count() != static_cast<size_t>(kParamRows * hidden)) {
    return ffi::Error::InvalidArgument("lstm step kernel: operand shapes do not match (B, 4H), (B, H), (B,), (22H,)");
  }
  return ffi::Error::Success();
}

ffi::Error StepForward(ffi::Buffer<ffi::F32> px, ffi::Buffer<ffi::F32> gh, ffi::Buffer<ffi::F32> c_prev,
                       ffi::Buffer<ffi::F32> h_prev, ffi::Buffer<ffi::S32> lengths, ffi::Buffer<ffi::S32> step,
                       ffi::Buffer<ffi::F32> params, double eps, bool ln, bool center,
                       ffi::ResultBuffer<ffi::F32> c_out, ffi::ResultBuffer<ffi::F32> h_out,
                       ffi::ResultBuffer<ffi::F32> y_out) {
  int64_t batch, hidden;
  if (auto e = CheckShapes(px, gh, c_prev, lengths, params, batch, hidden); e.failure()) return e;
  const float* p = params.typed_data();
  const int32_t t = step.typed_data()[0];
  Row row(hidden);
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
    StepActivations(px.typed_data() + b * 4 * hidden, gh.typed_data() + b * 4 * hidden, cp, p, hidden, eps, ln, center,
                    row);
    const float* so = row.act + 3 * hidden;
    Columns(hidden, [&](int64_t j, auto width) {
      constexpr int w = decltype(width)::value;
      const auto h = Ld<w>(so + j) * Tanh(CellNormOut<w>(row, p, hidden, ln, j));
      St<w>(co + j, Ld<w>(row.c_new + j));
      St<w>(ho + j, h);
      St<w>(yo + j, h);
    });
  }
  return ffi::Error::Success();
}

ffi::Error StepBackward(ffi::Buffer<ffi::F32> px, ffi::Buffer<ffi::F32> gh, ffi::Buffer<ffi::F32> c_prev,
                        ffi::Buffer<ffi::F32> dc, ffi::Buffer<ffi::F32> dh, ffi::Buffer<ffi::F32> dy,
                        ffi::Buffer<ffi::S32> lengths, ffi::Buffer<ffi::S32> step, ffi::Buffer<ffi::F32> params,
                        double eps, bool ln, bool center, ffi::ResultBuffer<ffi::F32> dpx,
                        ffi::ResultBuffer<ffi::F32> dgh, ffi::ResultBuffer<ffi::F32> dc_prev,
                        ffi::ResultBuffer<ffi::F32> dh_skip, ffi::ResultBuffer<ffi::F32> dparams) {
  int64_t batch, hidden;
  if (auto e = CheckShapes(px, gh, c_prev, lengths, params, batch, hidden); e.failure()) return e;
  const int64_t h4 = 4 * hidden;
  const float* p = params.typed_data();
  const int32_t t = step.typed_data()[0];
  Row row(hidden);
  std::vector<float> g(h4);
  ParamSums sums(kParamRows * hidden);
  float* sum_bias = sums.at(kBias * hidden);
  for (int64_t b = 0; b < batch; ++b) {
    sums.StartRow(b);
    const float* cp = c_prev.typed_data() + b * hidden;
    const float* dcr = dc.typed_data() + b * hidden;
    const float* dhr = dh.typed_data() + b * hidden;
    float* dpx_r = dpx->typed_data() + b * h4;
    float* dgh_r = dgh->typed_data() + b * h4;
    float* dcp = dc_prev->typed_data() + b * hidden;
    float* dhs = dh_skip->typed_data() + b * hidden;
    if (t >= lengths.typed_data()[b]) {  // padding: the cotangents pass the step untouched
      std::fill(dpx_r, dpx_r + h4, 0.0f);
      std::fill(dgh_r, dgh_r + h4, 0.0f);
      std::copy(dcr, dcr + hidden, dcp);
      std::copy(dhr, dhr + hidden, dhs);
      continue;
    }
    std::fill(dhs, dhs + hidden, 0.0f);
    StepActivations(px.typed_data() + b * h4, gh.typed_data() + b * h4, cp, p, hidden, eps, ln, center, row);
    const float *si = row.act, *sf = row.act + hidden, *tg = row.act + 2 * hidden, *so = row.act + 3 * hidden;
    const float* dyr = dy.typed_data() + b * hidden;
    float* da = row.da;
    // h = so * tanh(cn): the output gate's pre-activation and d cn.
    Columns(hidden, [&](int64_t j, auto width) {
      constexpr int w = decltype(width)::value;
      const auto th = Tanh(CellNormOut<w>(row, p, hidden, ln, j));
      const auto dhn = Ld<w>(dhr + j) + Ld<w>(dyr + j);
      const auto o = Ld<w>(so + j);
      St<w>(da + 3 * hidden + j, dhn * th * o * (1.0f - o));
      St<w>(ln ? row.d_cn + j : row.d_c + j, dhn * o * (1.0f - th * th));
    });
    if (ln) {
      LayerNormRowBackwardWithParams(row.d_cn, row.chat, row.rstd_c, p + kScaleC * hidden, hidden, center,
                                     sums.at(kScaleC * hidden), sums.at(kBiasC * hidden), g.data(),
                                     row.d_c);
    }
    // c = sf * c_prev + si * tg: d c_prev and the other gates' pre-activations.
    Columns(hidden, [&](int64_t j, auto width) {
      constexpr int w = decltype(width)::value;
      const auto dct = Ld<w>(row.d_c + j) + Ld<w>(dcr + j);
      const auto i = Ld<w>(si + j), f = Ld<w>(sf + j), gg = Ld<w>(tg + j);
      St<w>(dcp + j, dct * f);
      St<w>(da + j, dct * gg * i * (1.0f - i));
      St<w>(da + hidden + j, dct * Ld<w>(cp + j) * f * (1.0f - f));
      St<w>(da + 2 * hidden + j, dct * i * (1.0f - gg * gg));
    });
    // a = LN_x(px) + LN_h(gh) + bias: d bias = da (also the cotangent of LN_x's and LN_h's biases); through the norms.
    Columns(h4, [&](int64_t j, auto width) {
      constexpr int w = decltype(width)::value;
      St<w>(sum_bias + j, Ld<w>(sum_bias + j) + Ld<w>(da + j));
    });
    if (ln) {
      LayerNormRowBackwardWithParams(da, row.xhat, row.rstd_x, p + kScaleX * hidden, h4, center,
                                     sums.at(kScaleX * hidden), nullptr, g.data(), dpx_r);
      LayerNormRowBackwardWithParams(da, row.ghat, row.rstd_h, p + kScaleH * hidden, h4, center,
                                     sums.at(kScaleH * hidden), nullptr, g.data(), dgh_r);
    } else {
      std::copy(da, da + h4, dpx_r);
      std::copy(da, da + h4, dgh_r);
    }
  }
  float* out = dparams->typed_data();
  sums.Write(out);
  if (ln) {  // The biases of LN_x and LN_h receive the same cotangent as the gate bias.
    std::copy(out + kBias * hidden, out + (kBias + 4) * hidden, out + kBiasX * hidden);
    std::copy(out + kBias * hidden, out + (kBias + 4) * hidden, out + kBiasH * hidden);
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmStepForwardF32, StepForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // px = W_x x (B, 4H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // gh = W_h h_prev (B, 4H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c_prev (B, H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h_prev (B, H)
                                  .Arg<ffi::Buffer<ffi::S32>>()  // lengths (B,)
                                  .Arg<ffi::Buffer<ffi::S32>>()  // t ()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // params (22H)
                                  .Attr<double>("eps")
                                  .Attr<bool>("ln")
                                  .Attr<bool>("center")  // false: RMS norm instead of layer norm
                                  .Ret<ffi::Buffer<ffi::F32>>()  // c (B, H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // h (B, H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // y (B, H)
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmStepBackwardF32, StepBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // px
                                  .Arg<ffi::Buffer<ffi::F32>>()  // gh
                                  .Arg<ffi::Buffer<ffi::F32>>()  // c_prev
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dc
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dh
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dy
                                  .Arg<ffi::Buffer<ffi::S32>>()  // lengths
                                  .Arg<ffi::Buffer<ffi::S32>>()  // t
                                  .Arg<ffi::Buffer<ffi::F32>>()  // params (22H)
                                  .Attr<double>("eps")
                                  .Attr<bool>("ln")
                                  .Attr<bool>("center")  // false: RMS norm instead of layer norm
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d px (B, 4H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d gh (B, 4H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d c_prev (B, H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d h_prev's skip part (B, H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // the parameters' cotangent sums (22H)
);
