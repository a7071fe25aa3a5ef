// One time step of the GRU and of the layer-normalized GRU (appendix eq. 23-28, as layernorm.cells' GRUCell and
// LNGRUCell compute them) for XLA:CPU, forward and backward, everything of the step except its matmuls, called through
// the XLA FFI (layernorm/native.py builds and registers this file with the other kernels; layernorm/fused_gru.py runs
// it inside lax.scan and is its only caller). Why: as lstm_step_cpu.cc; the LN-GRU has four layer norms a step, each
// a separate set of XLA:CPU loops on the scan path.
//
// Forward, per row b, with px = W_x x_t (computed for all steps at once outside the scan) and gh = W_h h_prev, each
// (3H) in the order (r, z, n):
//   (r, z) = sigmoid(LN_xg(px[:2H]) + LN_hg(gh[:2H]) + bias[:2H])      (without ln: px + gh + bias)
//   n = tanh(LN_xc(px[2H:]) + bias[2H:] + r * LN_hc(gh[2H:]))           (without ln: px + bias + r * gh)
//   h = (1 - z) * n + z * h_prev
// with LN_k(v) = (v - mean) / sqrt(var + eps) * scale_k + bias_k over the 2H gate block or the H candidate block (or
// without `center` the RMS-GRU's RMS norm, v / sqrt(mean(v^2) + eps) * scale_k + bias_k, its bias_k packed as 0 and its
// gate and input biases in bias: see layernorm/fused_gru.py). The
// reset gate multiplies the (normalized) U h, after the matmul. bias is the input projection's bias (GRUCell's
// dense_i.bias; 0 for LNGRUCell, which has none). The step is kept only where t < lengths[b]: elsewhere (padding) h
// stays h_prev and the output is 0, as layernorm.unroll does.
// Backward: the transpose of that step at cotangents dh of the carry and dy of the output, recomputing the step's
// activations from (px, gh, h_prev): d px, d gh, the part of d h_prev that skips the matmul (z * (dh + dy) where the
// row is valid, dh where it is padding; the rest is d gh W_h^T, left to XLA), and this step's sums over rows of the
// parameters' cotangents.
// Parameters, packed in one vector of 15H (and their cotangents' sums likewise): bias (3H), scale_xg, bias_xg,
// scale_hg, bias_hg (2H each), scale_xc, bias_xc, scale_hc, bias_hc (H each). Without ln only bias is used.
// Numerics: those of rnn_step_common.h.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "rnn_step_common.h"

namespace {

// Offsets of the packed parameters (and of their cotangents' sums), in units of H.
enum GruOffset : int64_t {
  kGruBias = 0,
  kScaleXG = 3,
  kBiasXG = 5,
  kScaleHG = 7,
  kBiasHG = 9,
  kScaleXC = 11,
  kBiasXC = 12,
  kScaleHC = 13,
  kBiasHC = 14,
};
constexpr int64_t kGruParamRows = 15;

// A row's scratch and the step's activations: r, z, n after their non-linearities, the normalized px and gh (gate and
// candidate blocks each normalized on its own), hn (what r multiplies: LN_hc(gh[2H:]), or gh[2H:] without ln), the
// pre-activations' cotangents (r, z and the candidate's x part), hn's cotangent, and the four rstd.
struct GruRow {
  std::vector<float> data;
  float *act, *xhat, *ghat, *hn, *da, *dhn, *g;
  float rstd_xg = 1.0f, rstd_hg = 1.0f, rstd_xc = 1.0f, rstd_hc = 1.0f;
  explicit GruRow(int64_t hidden) : data(16 * hidden) {
    float* d = data.data();
    act = d, xhat = d + 3 * hidden, ghat = d + 6 * hidden, hn = d + 9 * hidden, da = d + 10 * hidden;
    dhn = d + 13 * hidden, g = d + 14 * hidden;
  }
};

inline void GruActivations(const float* px, const float* gh, const float* params, int64_t hidden, double eps, bool ln,
                           bool center, GruRow& row) {
  const int64_t h2 = 2 * hidden;
  float mean_xg = 0.0f, mean_hg = 0.0f, mean_xc = 0.0f, mean_hc = 0.0f;
  if (ln) {
    RowStats(px, h2, eps, center, mean_xg, row.rstd_xg);
    RowStats(gh, h2, eps, center, mean_hg, row.rstd_hg);
    RowStats(px + h2, hidden, eps, center, mean_xc, row.rstd_xc);
    RowStats(gh + h2, hidden, eps, center, mean_hc, row.rstd_hc);
  }
  const float* bias = params + kGruBias * hidden;
  const float *sx = params + kScaleXG * hidden, *bx = params + kBiasXG * hidden;
  const float *sh = params + kScaleHG * hidden, *bh = params + kBiasHG * hidden;
  // The gates r and z, block by block so that a vector never straddles two gates whatever H is.
  for (int64_t k = 0; k < 2; ++k) {
    const int64_t o = k * hidden;
    Columns(hidden, [&](int64_t j, auto width) {
      constexpr int w = decltype(width)::value;
      const int64_t i = o + j;
      Lane<w> a = Ld<w>(bias + i);
      if (ln) {
        const Lane<w> xh = (Ld<w>(px + i) - mean_xg) * row.rstd_xg, hh = (Ld<w>(gh + i) - mean_hg) * row.rstd_hg;
        St<w>(row.xhat + i, xh);
        St<w>(row.ghat + i, hh);
        a += xh * Ld<w>(sx + i) + Ld<w>(bx + i) + hh * Ld<w>(sh + i) + Ld<w>(bh + i);
      } else {
        a += Ld<w>(px + i) + Ld<w>(gh + i);
      }
      St<w>(row.act + i, Sigmoid(a));
    });
  }
  // The candidate n, after r.
  const float *sxc = params + kScaleXC * hidden, *bxc = params + kBiasXC * hidden;
  const float *shc = params + kScaleHC * hidden, *bhc = params + kBiasHC * hidden;
  Columns(hidden, [&](int64_t j, auto width) {
    constexpr int w = decltype(width)::value;
    const int64_t i = h2 + j;
    Lane<w> xn = Ld<w>(bias + i), hn;
    if (ln) {
      const Lane<w> xh = (Ld<w>(px + i) - mean_xc) * row.rstd_xc, hh = (Ld<w>(gh + i) - mean_hc) * row.rstd_hc;
      St<w>(row.xhat + i, xh);
      St<w>(row.ghat + i, hh);
      xn += xh * Ld<w>(sxc + j) + Ld<w>(bxc + j);
      hn = hh * Ld<w>(shc + j) + Ld<w>(bhc + j);
    } else {
      xn += Ld<w>(px + i);
      hn = Ld<w>(gh + i);
    }
    St<w>(row.hn + j, hn);
    St<w>(row.act + i, Tanh(xn + Ld<w>(row.act + j) * hn));
  });
}

ffi::Error CheckGruShapes(const ffi::Buffer<ffi::F32>& px, const ffi::Buffer<ffi::F32>& gh,
                          const ffi::Buffer<ffi::F32>& h_prev, const ffi::Buffer<ffi::S32>& lengths,
                          const ffi::Buffer<ffi::F32>& params, int64_t& batch, int64_t& hidden) {
  const auto dims = h_prev.dimensions();
  if (dims.size() != 2) return ffi::Error::InvalidArgument("gru step kernel: the carry must be (B, H)");
  batch = dims[0], hidden = dims[1];
  if (px.element_count() != static_cast<size_t>(batch * 3 * hidden) || gh.element_count() != px.element_count() ||
      lengths.element_count() != static_cast<size_t>(batch) ||
      params.element_count() != static_cast<size_t>(kGruParamRows * hidden)) {
    return ffi::Error::InvalidArgument("gru step kernel: operand shapes do not match (B, 3H), (B, H), (B,), (15H,)");
  }
  return ffi::Error::Success();
}

ffi::Error GruForward(ffi::Buffer<ffi::F32> px, ffi::Buffer<ffi::F32> gh, ffi::Buffer<ffi::F32> h_prev,
                      ffi::Buffer<ffi::S32> lengths, ffi::Buffer<ffi::S32> step, ffi::Buffer<ffi::F32> params,
                      double eps, bool ln, bool center, ffi::ResultBuffer<ffi::F32> h_out,
                      ffi::ResultBuffer<ffi::F32> y_out) {
  int64_t batch, hidden;
  if (auto e = CheckGruShapes(px, gh, h_prev, lengths, params, batch, hidden); e.failure()) return e;
  const float* p = params.typed_data();
  const int32_t t = step.typed_data()[0];
  GruRow row(hidden);
  for (int64_t b = 0; b < batch; ++b) {
    const float* hp = h_prev.typed_data() + b * hidden;
    float* ho = h_out->typed_data() + b * hidden;
    float* yo = y_out->typed_data() + b * hidden;
    if (t >= lengths.typed_data()[b]) {  // padding: carry unchanged, output 0
      std::copy(hp, hp + hidden, ho);
      std::fill(yo, yo + hidden, 0.0f);
      continue;
    }
    GruActivations(px.typed_data() + b * 3 * hidden, gh.typed_data() + b * 3 * hidden, p, hidden, eps, ln, center, row);
    const float *z = row.act + hidden, *n = row.act + 2 * hidden;
    Columns(hidden, [&](int64_t j, auto width) {
      constexpr int w = decltype(width)::value;
      const auto zj = Ld<w>(z + j);
      const auto h = (1.0f - zj) * Ld<w>(n + j) + zj * Ld<w>(hp + j);
      St<w>(ho + j, h);
      St<w>(yo + j, h);
    });
  }
  return ffi::Error::Success();
}

ffi::Error GruBackward(ffi::Buffer<ffi::F32> px, ffi::Buffer<ffi::F32> gh, ffi::Buffer<ffi::F32> h_prev,
                       ffi::Buffer<ffi::F32> dh, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::S32> lengths,
                       ffi::Buffer<ffi::S32> step, ffi::Buffer<ffi::F32> params, double eps, bool ln, bool center,
                       ffi::ResultBuffer<ffi::F32> dpx, ffi::ResultBuffer<ffi::F32> dgh,
                       ffi::ResultBuffer<ffi::F32> dh_skip, ffi::ResultBuffer<ffi::F32> dparams) {
  int64_t batch, hidden;
  if (auto e = CheckGruShapes(px, gh, h_prev, lengths, params, batch, hidden); e.failure()) return e;
  const int64_t h2 = 2 * hidden, h3 = 3 * hidden;
  const float* p = params.typed_data();
  const int32_t t = step.typed_data()[0];
  GruRow row(hidden);
  ParamSums sums(kGruParamRows * hidden);
  float* sum_bias = sums.at(kGruBias * hidden);
  for (int64_t b = 0; b < batch; ++b) {
    sums.StartRow(b);
    const float* hp = h_prev.typed_data() + b * hidden;
    const float* dhr = dh.typed_data() + b * hidden;
    float* dpx_r = dpx->typed_data() + b * h3;
    float* dgh_r = dgh->typed_data() + b * h3;
    float* dhs = dh_skip->typed_data() + b * hidden;
    if (t >= lengths.typed_data()[b]) {  // padding: the cotangents pass the step untouched
      std::fill(dpx_r, dpx_r + h3, 0.0f);
      std::fill(dgh_r, dgh_r + h3, 0.0f);
      std::copy(dhr, dhr + hidden, dhs);
      continue;
    }
    GruActivations(px.typed_data() + b * h3, gh.typed_data() + b * h3, p, hidden, eps, ln, center, row);
    const float *r = row.act, *z = row.act + hidden, *n = row.act + h2;
    const float* dyr = dy.typed_data() + b * hidden;
    float* da = row.da;
    // h = (1 - z) * n + z * h_prev and n = tanh(xn + r * hn): the cotangents of h_prev's skip, of the pre-activations
    // of r, z and n (the last is also xn's), and of hn.
    Columns(hidden, [&](int64_t j, auto width) {
      constexpr int w = decltype(width)::value;
      const auto dht = Ld<w>(dhr + j) + Ld<w>(dyr + j);
      const auto rj = Ld<w>(r + j), zj = Ld<w>(z + j), nj = Ld<w>(n + j);
      St<w>(dhs + j, dht * zj);
      const auto dan = dht * (1.0f - zj) * (1.0f - nj * nj);
      St<w>(da + h2 + j, dan);
      St<w>(row.dhn + j, dan * rj);
      St<w>(da + j, dan * Ld<w>(row.hn + j) * rj * (1.0f - rj));
      St<w>(da + hidden + j, dht * (Ld<w>(hp + j) - nj) * zj * (1.0f - zj));
    });
    Columns(h3, [&](int64_t j, auto width) {
      constexpr int w = decltype(width)::value;
      St<w>(sum_bias + j, Ld<w>(sum_bias + j) + Ld<w>(da + j));
    });
    if (ln) {
      LayerNormRowBackwardWithParams(da, row.xhat, row.rstd_xg, p + kScaleXG * hidden, h2, center,
                                     sums.at(kScaleXG * hidden),
                                     sums.at(kBiasXG * hidden), row.g, dpx_r);
      LayerNormRowBackwardWithParams(da, row.ghat, row.rstd_hg, p + kScaleHG * hidden, h2, center,
                                     sums.at(kScaleHG * hidden),
                                     sums.at(kBiasHG * hidden), row.g, dgh_r);
      LayerNormRowBackwardWithParams(da + h2, row.xhat + h2, row.rstd_xc, p + kScaleXC * hidden, hidden, center,
                                     sums.at(kScaleXC * hidden), sums.at(kBiasXC * hidden), row.g, dpx_r + h2);
      LayerNormRowBackwardWithParams(row.dhn, row.ghat + h2, row.rstd_hc, p + kScaleHC * hidden, hidden, center,
                                     sums.at(kScaleHC * hidden), sums.at(kBiasHC * hidden), row.g, dgh_r + h2);
    } else {
      std::copy(da, da + h3, dpx_r);
      std::copy(da, da + h2, dgh_r);
      std::copy(row.dhn, row.dhn + hidden, dgh_r + h2);
    }
  }
  sums.Write(dparams->typed_data());
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GruStepForwardF32, GruForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // px = W_x x (B, 3H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // gh = W_h h_prev (B, 3H)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h_prev (B, H)
                                  .Arg<ffi::Buffer<ffi::S32>>()  // lengths (B,)
                                  .Arg<ffi::Buffer<ffi::S32>>()  // t ()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // params (15H)
                                  .Attr<double>("eps")
                                  .Attr<bool>("ln")
                                  .Attr<bool>("center")  // false: RMS norm instead of layer norm
                                  .Ret<ffi::Buffer<ffi::F32>>()  // h (B, H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // y (B, H)
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(GruStepBackwardF32, GruBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // px
                                  .Arg<ffi::Buffer<ffi::F32>>()  // gh
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h_prev
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dh
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dy
                                  .Arg<ffi::Buffer<ffi::S32>>()  // lengths
                                  .Arg<ffi::Buffer<ffi::S32>>()  // t
                                  .Arg<ffi::Buffer<ffi::F32>>()  // params (15H)
                                  .Attr<double>("eps")
                                  .Attr<bool>("ln")
                                  .Attr<bool>("center")  // false: RMS norm instead of layer norm
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d px (B, 3H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d gh (B, 3H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d h_prev's skip part (B, H)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // the parameters' cotangent sums (15H)
);
