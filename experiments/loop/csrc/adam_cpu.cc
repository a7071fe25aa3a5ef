// The training loop's whole optimizer update for XLA:CPU in one pass over the parameters: gradient clipping, Adam,
// the learning rate, the parameter update and the three norms the loop logs, called through the XLA FFI
// (experiments/loop/fused_adam.py builds it with layernorm.native and is its only caller).
//
// Why: XLA:CPU runs a per-parameter optax update as several loops over each array (the moments, the direction, the
// update, the new parameters), and the loop's metrics (|g|, |u|, |p|) add three more, each reading the whole array:
// at MNIST's 1000x1000 layer and batch 4 that was 9 passes over 4 MB per step, and the step took 1.5-3x the time of a
// minimal optax step. Concatenating all parameters into one vector first (optax.flatten) is worse there: XLA:CPU emits
// a many-operand concatenate as a per-element select over its operands, unvectorised, and fuses the bias gradients'
// reductions into it (27 ms of a 30 ms step). Here every parameter array is read and written once, in place.
//
// Arguments: hyper f32[9] = (lr_t, b1, b2, eps, a, b, clip_value, 1 - b1, 1 - b2), the last two rounded from the
// decays in double precision as optax does, then for each parameter array its
// (param, grad, mu, nu), all float32 of one shape. Results: for each array (param', mu', nu'), aliased to the inputs,
// then norms f32[3] = (|g|, |u|, |p'|), |g| before clipping. Per element, with c the clipping factor:
//   g' = c g;  mu' = (1 - b1) g' + b1 mu;  nu' = (1 - b2) g'^2 + b2 nu
//   u = -lr_t * (a mu') / (sqrt(b nu') + eps);  param' = param + u
// optax.adam is a = 1 / (1 - b1^t), b = 1 / (1 - b2^t); the Theano code's Adam is a = its factor, b = 1.
// Clipping (attribute `clip`): 0 none; 1 global norm (c = v / |g| when |g| > v); 2 per array (c_i = v / |g_i| when
// |g_i| > v); 3 the attentive reader's (c = v / sqrt(|g|) when |g| > v^2). Norms are summed in double precision.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Built with -fno-math-errno (fused_adam.py): otherwise every sqrt is a branch, to set errno for a negative input, and
// the update does not vectorise; nu' >= 0, so nothing is lost.
// Loops run over blocks of kLanes elements with one partial sum per lane, in float within a block of kFlush elements
// and in double across blocks: without -ffast-math the compiler vectorises no floating-point sum (it may not reorder
// one), and a scalar loop over MNIST's million parameters took 10 ms. The in-place results (out == in) rule out
// `restrict`, so each block is read into locals first and written back after.
constexpr int64_t kLanes = 16;
constexpr int64_t kFlush = 1024;

double SumOfSquares(const float* x, int64_t n) {
  double total = 0.0;
  float lanes[kLanes] = {};
  const int64_t whole = n - n % kLanes;
  for (int64_t i = 0; i < whole; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] += x[i + l] * x[i + l];
    if ((i + kLanes) % kFlush == 0) {
      for (int64_t l = 0; l < kLanes; ++l) total += lanes[l], lanes[l] = 0.0f;
    }
  }
  for (int64_t l = 0; l < kLanes; ++l) total += lanes[l];
  for (int64_t i = whole; i < n; ++i) total += static_cast<double>(x[i]) * x[i];
  return total;
}

struct Hyper {
  float clip, neg_lr, b1, b2, one_minus_b1, one_minus_b2, eps, a, b;
};

// Elements [i, i + count) of one array, count <= kLanes; adds u^2 and param'^2 to the lane sums.
inline void UpdateBlock(const float* p, const float* g, const float* m, const float* v, float* p_out, float* m_out,
                        float* v_out, int64_t i, int64_t count, const Hyper& h, float* u_lanes, float* p_lanes) {
  float mi[kLanes], vi[kLanes], pi[kLanes], u[kLanes];
  for (int64_t l = 0; l < count; ++l) {
    const float gi = g[i + l] * h.clip;
    mi[l] = h.one_minus_b1 * gi + h.b1 * m[i + l];
    vi[l] = h.one_minus_b2 * (gi * gi) + h.b2 * v[i + l];
    u[l] = h.neg_lr * ((mi[l] * h.a) / (std::sqrt(vi[l] * h.b) + h.eps));
    pi[l] = p[i + l] + u[l];
  }
  for (int64_t l = 0; l < count; ++l) {
    m_out[i + l] = mi[l];
    v_out[i + l] = vi[l];
    p_out[i + l] = pi[l];
    u_lanes[l] += u[l] * u[l];
    p_lanes[l] += pi[l] * pi[l];
  }
}

// One array's update; adds sum u^2 and sum param'^2 to *u_sq and *p_sq.
void UpdateArray(const float* p, const float* g, const float* m, const float* v, float* p_out, float* m_out,
                 float* v_out, int64_t n, const Hyper& h, double* u_sq, double* p_sq) {
  float u_lanes[kLanes] = {}, p_lanes[kLanes] = {};
  auto flush = [&] {
    for (int64_t l = 0; l < kLanes; ++l) {
      *u_sq += u_lanes[l], *p_sq += p_lanes[l];
      u_lanes[l] = p_lanes[l] = 0.0f;
    }
  };
  const int64_t whole = n - n % kLanes;
  for (int64_t i = 0; i < whole; i += kLanes) {
    UpdateBlock(p, g, m, v, p_out, m_out, v_out, i, kLanes, h, u_lanes, p_lanes);
    if ((i + kLanes) % kFlush == 0) flush();
  }
  if (whole < n) UpdateBlock(p, g, m, v, p_out, m_out, v_out, whole, n - whole, h, u_lanes, p_lanes);
  flush();
}

// Work is cut into pieces of at most kPiece elements (a piece never spans two arrays); each piece's sums are kept
// apart and added in piece order afterwards, so the result does not depend on which thread ran which piece.
constexpr int64_t kPiece = 1 << 16;
// Below this many elements in all, one thread: handing pieces to XLA's pool costs more than it saves.
constexpr int64_t kParallelMin = 1 << 18;

struct Piece {
  int64_t array, begin, end;
};

// Runs f(0), ..., f(n - 1) on the calling thread and XLA's intra-op pool; returns when all have run. A pool task
// that starts after the work is gone finds nothing to do and touches nothing but `shared`, which it co-owns.
void ParallelFor(ffi::ThreadPool& pool, int64_t n, bool parallel, const std::function<void(int64_t)>& f) {
  const int64_t helpers = parallel ? std::min<int64_t>(pool.num_threads(), n - 1) : 0;
  if (helpers <= 0) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  struct Shared {
    std::atomic<int64_t> next{0}, done{0};
    int64_t n = 0;
    const std::function<void(int64_t)>* f = nullptr;
    std::mutex mutex;
    std::condition_variable all_done;
  };
  auto shared = std::make_shared<Shared>();
  shared->n = n;
  shared->f = &f;
  auto work = [shared] {
    int64_t finished = 0;
    for (int64_t i = shared->next.fetch_add(1); i < shared->n; i = shared->next.fetch_add(1)) {
      (*shared->f)(i);
      ++finished;
    }
    if (finished > 0 && shared->done.fetch_add(finished) + finished == shared->n) {
      std::lock_guard<std::mutex> lock(shared->mutex);
      shared->all_done.notify_all();
    }
  };
  for (int64_t k = 0; k < helpers; ++k) pool.Schedule(decltype(work)(work));  // Each task its own copy.
  work();
  std::unique_lock<std::mutex> lock(shared->mutex);
  shared->all_done.wait(lock, [&] { return shared->done.load() == shared->n; });
}

ffi::Error AdamUpdate(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> hyper, ffi::RemainingArgs args,
                      ffi::RemainingRets rets, int64_t clip) {
  const int64_t arrays = static_cast<int64_t>(args.size()) / 4;
  if (static_cast<int64_t>(args.size()) != 4 * arrays || static_cast<int64_t>(rets.size()) != 3 * arrays + 1) {
    return ffi::Error::InvalidArgument("adam_update: expected 4 arguments and 3 results per array, plus the norms");
  }
  if (hyper.element_count() != 9) return ffi::Error::InvalidArgument("adam_update: hyper must have 9 elements");
  const float* h = hyper.typed_data();
  const float lr = h[0], b1 = h[1], b2 = h[2], eps = h[3], a = h[4], b = h[5], value = h[6], one_minus_b1 = h[7],
              one_minus_b2 = h[8];

  std::vector<const float*> in(4 * arrays);
  std::vector<float*> out(3 * arrays);
  std::vector<int64_t> size(arrays);
  for (int64_t k = 0; k < 4 * arrays; ++k) {
    auto buffer = args.get<ffi::AnyBuffer>(k);
    if (!buffer.has_value() || buffer->element_type() != ffi::DataType::F32) {
      return ffi::Error::InvalidArgument("adam_update: every parameter, gradient and moment must be float32");
    }
    if (k % 4 == 0) size[k / 4] = static_cast<int64_t>(buffer->element_count());
    if (static_cast<int64_t>(buffer->element_count()) != size[k / 4]) {
      return ffi::Error::InvalidArgument("adam_update: a parameter's gradient and moments must have its shape");
    }
    in[k] = static_cast<const float*>(buffer->untyped_data());
  }
  for (int64_t k = 0; k < 3 * arrays; ++k) {
    auto buffer = rets.get<ffi::AnyBuffer>(k);
    if (!buffer.has_value()) return ffi::Error::InvalidArgument("adam_update: bad result buffer");
    out[k] = static_cast<float*>((*buffer)->untyped_data());
  }
  auto norms_buffer = rets.get<ffi::AnyBuffer>(3 * arrays);
  if (!norms_buffer.has_value()) return ffi::Error::InvalidArgument("adam_update: bad norms buffer");
  float* norms = static_cast<float*>((*norms_buffer)->untyped_data());

  std::vector<Piece> pieces;
  int64_t total = 0;
  for (int64_t i = 0; i < arrays; ++i) {
    for (int64_t begin = 0; begin < size[i]; begin += kPiece) {
      pieces.push_back({i, begin, std::min(size[i], begin + kPiece)});
    }
    total += size[i];
  }
  const int64_t n = static_cast<int64_t>(pieces.size());
  const bool parallel = total >= kParallelMin;

  // Pass 1: the gradient norms (each array's and the global one), which clipping needs before any update.
  std::vector<double> piece_g(n);
  ParallelFor(pool, n, parallel, [&](int64_t k) {
    const Piece& piece = pieces[k];
    piece_g[k] = SumOfSquares(in[4 * piece.array + 1] + piece.begin, piece.end - piece.begin);
  });
  std::vector<double> g_sq(arrays, 0.0);
  double g_total = 0.0;
  for (int64_t k = 0; k < n; ++k) g_sq[pieces[k].array] += piece_g[k];
  for (int64_t i = 0; i < arrays; ++i) g_total += g_sq[i];
  const double g_norm = std::sqrt(g_total);
  float global_clip = 1.0f;
  if (clip == 1 && g_norm > value) global_clip = static_cast<float>(value / g_norm);
  if (clip == 3 && g_norm > static_cast<double>(value) * value) {
    global_clip = static_cast<float>(value / std::sqrt(std::max(g_norm, 1e-30)));
  }
  std::vector<Hyper> hyper_of(arrays);
  for (int64_t i = 0; i < arrays; ++i) {
    float c = global_clip;
    if (clip == 2) {
      const double norm = std::sqrt(g_sq[i]);
      c = norm > value ? static_cast<float>(value / std::max(norm, 1e-30)) : 1.0f;
    }
    hyper_of[i] = Hyper{c, -lr, b1, b2, one_minus_b1, one_minus_b2, eps, a, b};
  }

  // Pass 2: the update, piece by piece, in place.
  std::vector<double> piece_u(n, 0.0), piece_p(n, 0.0);
  ParallelFor(pool, n, parallel, [&](int64_t k) {
    const Piece& piece = pieces[k];
    const int64_t i = piece.array, at = piece.begin;
    UpdateArray(in[4 * i] + at, in[4 * i + 1] + at, in[4 * i + 2] + at, in[4 * i + 3] + at, out[3 * i] + at,
                out[3 * i + 1] + at, out[3 * i + 2] + at, piece.end - at, hyper_of[i], &piece_u[k], &piece_p[k]);
  });
  double u_sq = 0.0, p_sq = 0.0;
  for (int64_t k = 0; k < n; ++k) u_sq += piece_u[k], p_sq += piece_p[k];
  norms[0] = static_cast<float>(g_norm);
  norms[1] = static_cast<float>(std::sqrt(u_sq));
  norms[2] = static_cast<float>(std::sqrt(p_sq));
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AdamUpdateF32, AdamUpdate,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()        // XLA's intra-op pool, for large models
                                  .Arg<ffi::Buffer<ffi::F32>>()  // hyper f32[9]
                                  .RemainingArgs()               // (param, grad, mu, nu) per array
                                  .RemainingRets()               // (param', mu', nu') per array, then norms f32[3]
                                  .Attr<int64_t>("clip"));
