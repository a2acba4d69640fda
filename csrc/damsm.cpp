// DAMSM all-pair scores (DESIGN.md §3.2): the driver. Images go in blocks; per block the FLOP-heavy
// parts are GEMMs through ATen (MKL/cuBLAS) over all sentences' words at once, and the softmaxes,
// cosines and their gradients are the fused stages of damsm_stages.h (CPU loops or CUDA kernels).
//
// Per block of J images, with V (J, D, R), Vp = the same regions as one (D, J*R) matrix, and the
// word matrix E (D, K):
//   X   = E^T Vp               (K, J*R)   one GEMM
//   P1, A = the two softmaxes  (in X; A: (J, K, R))          stage
//   Ctx = V A^T                (J, D, K)  batched GEMM
//   cos, scores = log sum exp(gamma2 * cos)                  stages
// Backward takes X (= P1), A, Ctx, cos and the scores from the forward's saved buffer where the
// forward kept them (save=true, see saved_floats), else recomputes the block (2 more GEMMs),
// then
//   dCtx, dE (direct)          stage
//   dA  = dCtx^T V             (J, K, R)  batched GEMM
//   dX  (in X, or a scratch buffer when X is saved)   stage
//   dV  = dCtx A + E dX        (J, D, R)  batched GEMM + (CPU) J GEMMs accumulating in place,
//                                         (CUDA) one GEMM (E dX as (D, J, R)) and an add
//   dE += Vp dX^T                         GEMM
#include <initializer_list>
#include <optional>

#include <ATen/ATen.h>

#include "checks.h"
#include "damsm_stages.h"
#include "host_buffer.h"
#include "ops.h"

#ifdef ATTNFAST_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda_launch.h"
#define ATTNFAST_STAGE(name, ...)                                                  \
  (dev_.is_cuda() ? check_cuda(cuda::name(__VA_ARGS__, stream_), #name)          \
                  : cpu::name(__VA_ARGS__))
#else
#define ATTNFAST_STAGE(name, ...) cpu::name(__VA_ARGS__)
#endif

namespace attnfast {
namespace {

// Elements of one (J, K, R) block buffer, which sets J: on the CPU a few images at a time keep
// the working set near the caches; a GPU wants large blocks (few, large launches).
constexpr int64_t kCpuBlockElements = 1 << 20;
constexpr int64_t kCudaBlockElements = 1 << 25;

float* f(const at::Tensor& t) { return t.data_ptr<float>(); }

// The saved buffer: sized for the padded word count S*T (>= K), so that its shape follows from the
// input shapes alone; for the K word columns in use it holds, one after the other,
//   x (P1): block [j0, j0 + J) as (K, J*R) at offset j0*K*R; a (images, K, R); ctx (images, D, K);
//   cos, c_norm (images, K); scores (images, S)
// and K itself (a float, exact below 2^24) in its last element, which the backward checks.
int64_t saved_floats(int64_t images, int64_t dim, int64_t regions, int64_t sentences,
                     int64_t columns) {
  return images * (columns * (2 * regions + dim + 2) + sentences);
}

class Damsm {
 public:
  Damsm(const at::Tensor& regions, const at::Tensor& words, const at::Tensor& cap_lens,
        double gamma1, double gamma2, std::optional<bool> padded)
      : dev_(regions.device()), g1_(static_cast<float>(gamma1)), g2_(static_cast<float>(gamma2)) {
    check_features("regions", regions, 3, "(B_img, D, R)");
    check_features("words", words, 3, "(B_sent, D, T)");
    check_same("words", words, "regions", regions);
    TORCH_CHECK(words.size(1) == regions.size(1), "words must have shape (B_sent, D, T) with D = ",
                regions.size(1), " (D of regions), got ", words.sizes());
    TORCH_CHECK(cap_lens.dim() == 1 && cap_lens.size(0) == words.size(0),
                "cap_lens must have shape (B_sent,) = (", words.size(0), ",), got ",
                cap_lens.sizes());
    TORCH_CHECK(at::isIntegralType(cap_lens.scalar_type(), /*includeBool=*/false),
                "cap_lens must be an integer tensor, got ", cap_lens.scalar_type());
#ifdef ATTNFAST_WITH_CUDA
    if (dev_.is_cuda()) {
      guard_.emplace(dev_);
      stream_ = c10::cuda::getCurrentCUDAStream();
    }
#endif
    images_ = regions.size(0);
    dim_ = regions.size(1);
    R_ = regions.size(2);
    S_ = words.size(0);
    T_ = words.size(2);
    V_ = regions.to(at::kFloat).contiguous();
    Vp_ = V_.permute({1, 0, 2}).reshape({dim_, images_ * R_});
    at::Tensor lens = cap_lens.to(dev_, at::kLong).contiguous();
    at::Tensor padded_words = words.to(at::kFloat).permute({1, 0, 2}).reshape({dim_, S_ * T_});
    const bool pad = padded.value_or(dev_.is_cuda());
    if (lens.is_cpu() || !pad) {  // a check of CUDA lengths would wait for the GPU
      const at::Tensor host = lens.cpu();
      TORCH_CHECK(host.min().item<int64_t>() >= 1 && host.max().item<int64_t>() <= T_,
                  "cap_lens must lie in [1, T=", T_, "]");
    }
    if (pad) {
      // Sentence i owns columns [i*T, i*T + len); the lengths never go to the host.
      start_ = at::arange(S_, lens.options()) * T_;
      length_ = lens;
      column_segment_ = at::arange(S_ * T_, lens.options()).div(T_, "floor");
      E_ = padded_words.contiguous();
    } else {
      const at::Tensor host = lens.cpu();
      length_ = host.to(dev_);
      start_ = (host.cumsum(0) - host).to(dev_);
      at::Tensor t = at::arange(T_, host.options());
      at::Tensor valid = t.unsqueeze(0) < host.unsqueeze(1);                  // (S, T)
      columns_ = at::arange(S_ * T_, host.options()).masked_select(valid.view(-1)).to(dev_);
      column_segment_ = at::arange(S_, host.options()).repeat_interleave(host).to(dev_);
      E_ = padded_words.index_select(1, columns_).contiguous();
    }
    K_ = E_.size(1);
    e_norm_ = E_.norm(2, {0}).contiguous();
    seg_ = Segments{start_.data_ptr<int64_t>(), length_.data_ptr<int64_t>(),
                    column_segment_.data_ptr<int64_t>(), S_, K_};
    const int64_t budget = dev_.is_cuda() ? kCudaBlockElements : kCpuBlockElements;
    block_ = std::max<int64_t>(1, std::min<int64_t>(images_, budget / std::max<int64_t>(1, R_ * K_)));
  }

  std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(bool return_attn,
                                                          at::ScalarType out_type, bool save) {
    at::Tensor scores = at::empty({images_, S_}, V_.options());
    at::Tensor attn = return_attn ? at::empty({images_, S_, T_, R_}, V_.options()) : at::Tensor();
    at::Tensor saved;
    std::optional<Saved> keep;
    Buffers b;
    if (save) {
      const int64_t numel = saved_floats(images_, dim_, R_, S_, S_ * T_) + 1;
      saved = dev_.is_cpu() ? cpu::reusable_float_buffer(numel) : at::empty({numel}, V_.options());
      keep = saved_parts(saved);
    } else {
      b = buffers(/*intermediates=*/true, /*gradients=*/false);
    }
    for (int64_t j0 = 0; j0 < images_; j0 += block_) {
      const int64_t J = std::min(block_, images_ - j0);
      Block k = keep ? saved_block(*keep, j0, J) : scratch_block(b, j0, J);
      compute(k, J, scores.narrow(0, j0, J));
      if (return_attn) write_attention(k.a, attn.narrow(0, j0, J));
    }
    if (keep) {
      keep->scores.copy_(scores);
      // The part sized for dead columns is zeroed: the same inputs give the same buffer.
      const int64_t used = saved_floats(images_, dim_, R_, S_, K_), total = saved.numel() - 1;
      saved.narrow(0, used, total - used).zero_();
      saved.narrow(0, total, 1).fill_(static_cast<double>(K_));
    }
    return {scores.to(out_type), return_attn ? attn.to(out_type) : at::Tensor(), saved};
  }

  std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& dscores_in,
                                              at::ScalarType regions_type,
                                              at::ScalarType words_type,
                                              const std::optional<at::Tensor>& saved) {
    TORCH_CHECK(dscores_in.dim() == 2 && dscores_in.size(0) == images_ && dscores_in.size(1) == S_,
                "dscores must have shape (B_img, B_sent) = (", images_, ", ", S_, "), got ",
                dscores_in.sizes());
    at::Tensor dscores = dscores_in.to(dev_, at::kFloat).contiguous();
    std::optional<Saved> keep;
    if (saved.has_value() && saved->defined()) keep = saved_parts(checked_saved(*saved));
    at::Tensor dV = at::empty({images_, dim_, R_}, V_.options());
    at::Tensor dE = at::zeros({dim_, K_}, V_.options());
    at::Tensor scores = keep ? at::Tensor() : at::empty({block_, S_}, V_.options());
    Buffers b = buffers(/*intermediates=*/!keep, /*gradients=*/true);
    for (int64_t j0 = 0; j0 < images_; j0 += block_) {
      const int64_t J = std::min(block_, images_ - j0);
      at::Tensor dx = b.x.narrow(0, 0, K_ * J * R_).view({K_, J * R_});
      at::Tensor block_scores;
      Block k;
      if (keep) {  // dX goes to the scratch x: the saved P1 stays intact (retain_graph)
        k = saved_block(*keep, j0, J);
        block_scores = keep->scores.narrow(0, j0, J);
      } else {     // recompute, and turn P1 into dX in place
        k = scratch_block(b, j0, J);
        block_scores = scores.narrow(0, 0, J);
        compute(k, J, block_scores);
      }
      at::Tensor alpha = b.alpha.narrow(0, 0, J), beta = b.beta.narrow(0, 0, J),
                 delta = b.delta.narrow(0, 0, J), dctx = b.dctx.narrow(0, 0, J),
                 da = b.da.narrow(0, 0, J);
      ATTNFAST_STAGE(damsm_cosine_grad, f(k.cos), f(k.c_norm), f(e_norm_), f(block_scores),
                     f(dscores) + j0 * S_, J, seg_, g2_, f(alpha), f(beta), f(delta));
      ATTNFAST_STAGE(damsm_context_grad, f(k.ctx), f(E_), f(alpha), f(beta), f(delta), J, dim_, K_,
                     f(dctx), f(dE));
      at::bmm_out(da, dctx.transpose(1, 2), k.v);                          // dA = dCtx^T V
      ATTNFAST_STAGE(damsm_softmax_backward, f(k.x), f(dx), J * R_, f(k.a), f(da), J, R_, seg_,
                     g1_);
      at::Tensor dv = dV.narrow(0, j0, J);
      at::bmm_out(dv, dctx, k.a);                                          // dCtx A
      if (dev_.is_cpu()) {  // += E dX_j in place, image by image
        for (int64_t j = 0; j < J; ++j) dv.select(0, j).addmm_(E_, dx.narrow(1, j * R_, R_));
      } else {              // one launch: E dX as (D, J, R), then added
        dv.add_(at::mm(E_, dx).view({dim_, J, R_}).permute({1, 0, 2}));
      }
      dE.addmm_(k.vp, dx.t());                                             // Vp dX^T
    }
    at::Tensor dwords_padded = dE;
    if (columns_.defined()) {
      dwords_padded = at::zeros({dim_, S_ * T_}, V_.options()).index_copy_(1, columns_, dE);
    }
    at::Tensor dwords = dwords_padded.view({dim_, S_, T_}).permute({1, 0, 2}).contiguous();
    return {dV.to(regions_type), dwords.to(words_type)};
  }

 private:
  struct Buffers {  // one block's worth each
    at::Tensor x;                                    // X (forward), dX (backward)
    at::Tensor a, ctx, cos, c_norm;                  // intermediates, when not saved
    at::Tensor da, dctx, alpha, beta, delta;         // gradients
  };
  struct Block {
    at::Tensor v, vp, x, a, ctx, cos, c_norm;        // this block's inputs and intermediates
  };
  struct Saved {                                     // views of the saved buffer (all images)
    at::Tensor x, a, ctx, cos, c_norm, scores;
  };

  Buffers buffers(bool intermediates, bool gradients) const {
    auto o = V_.options();
    Buffers b;
    b.x = at::empty({K_ * block_ * R_}, o);
    if (intermediates) {
      b.a = at::empty({block_, K_, R_}, o);
      b.ctx = at::empty({block_, dim_, K_}, o);
      b.cos = at::empty({block_, K_}, o);
      b.c_norm = at::empty({block_, K_}, o);
    }
    if (gradients) {
      b.da = at::empty({block_, K_, R_}, o);
      b.dctx = at::empty({block_, dim_, K_}, o);
      b.alpha = at::empty({block_, K_}, o);
      b.beta = at::empty({block_, K_}, o);
      b.delta = at::empty({block_, K_}, o);
    }
    return b;
  }

  Saved saved_parts(const at::Tensor& buffer) const {
    int64_t offset = 0;
    auto take = [&](std::initializer_list<int64_t> shape) {
      int64_t count = 1;
      for (int64_t n : shape) count *= n;
      at::Tensor part = buffer.narrow(0, offset, count).view(shape);
      offset += count;
      return part;
    };
    Saved s;
    s.x = take({images_ * K_ * R_});
    s.a = take({images_, K_, R_});
    s.ctx = take({images_, dim_, K_});
    s.cos = take({images_, K_});
    s.c_norm = take({images_, K_});
    s.scores = take({images_, S_});
    return s;
  }

  // `saved` as damsm_forward(save=true) returned it for these inputs, or an error.
  const at::Tensor& checked_saved(const at::Tensor& saved) const {
    const int64_t numel = saved_floats(images_, dim_, R_, S_, S_ * T_) + 1;
    TORCH_CHECK(saved.dim() == 1 && saved.numel() == numel && saved.scalar_type() == at::kFloat &&
                    saved.device() == dev_ && saved.is_contiguous(),
                "saved must be the contiguous float32 (", numel, ",) tensor on ", dev_,
                " that damsm_forward(save=True) returned for these inputs, got ",
                saved.scalar_type(), " ", saved.sizes(), " on ", saved.device());
    const double columns = saved.narrow(0, numel - 1, 1).item<double>();
    TORCH_CHECK(columns == static_cast<double>(K_), "saved was made for ", columns,
                " word columns, these inputs have ", K_,
                " (other cap_lens or word layout than the forward's)");
    return saved;
  }

  Block saved_block(const Saved& s, int64_t j0, int64_t J) const {
    return Block{V_.narrow(0, j0, J), Vp_.narrow(1, j0 * R_, J * R_),
                 s.x.narrow(0, j0 * K_ * R_, K_ * J * R_).view({K_, J * R_}),
                 s.a.narrow(0, j0, J), s.ctx.narrow(0, j0, J), s.cos.narrow(0, j0, J),
                 s.c_norm.narrow(0, j0, J)};
  }

  Block scratch_block(const Buffers& b, int64_t j0, int64_t J) const {
    return Block{V_.narrow(0, j0, J), Vp_.narrow(1, j0 * R_, J * R_),
                 b.x.narrow(0, 0, K_ * J * R_).view({K_, J * R_}), b.a.narrow(0, 0, J),
                 b.ctx.narrow(0, 0, J), b.cos.narrow(0, 0, J), b.c_norm.narrow(0, 0, J)};
  }

  // Scores of the J images of block `k` against all sentences into `scores` (J, S), filling the
  // block's intermediates.
  void compute(Block& k, int64_t J, at::Tensor scores) {
    at::mm_out(k.x, E_.t(), k.vp);                                       // X = E^T Vp
    ATTNFAST_STAGE(damsm_softmax, f(k.x), J * R_, f(k.a), J, R_, seg_, g1_);
    at::bmm_out(k.ctx, k.v, k.a.transpose(1, 2));                        // Ctx = V A^T
    ATTNFAST_STAGE(damsm_cosine, f(k.ctx), f(E_), f(e_norm_), J, dim_, K_, f(k.cos),
                   f(k.c_norm));
    ATTNFAST_STAGE(damsm_segment_lse, f(k.cos), J, seg_, g2_, f(scores));
  }

  // attn[j, i, t, r] = A[j, column of (i, t), r], zero for padded words (A's dead rows are zero).
  void write_attention(const at::Tensor& a, at::Tensor attn) const {
    const int64_t J = a.size(0);
    at::Tensor padded = a;
    if (columns_.defined()) {
      padded = at::zeros({J, S_ * T_, R_}, a.options()).index_copy_(1, columns_, a);
    }
    attn.copy_(padded.view({J, S_, T_, R_}));
  }

  at::Device dev_;
  float g1_, g2_;
  int64_t images_ = 0, dim_ = 0, R_ = 0, S_ = 0, T_ = 0, K_ = 0, block_ = 1;
  at::Tensor V_, Vp_, E_, e_norm_;
  at::Tensor start_, length_, column_segment_, columns_;  // columns_: compact layout only
  Segments seg_{};
#ifdef ATTNFAST_WITH_CUDA
  std::optional<c10::cuda::CUDAGuard> guard_;
  cudaStream_t stream_ = nullptr;
#endif
};

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> damsm_forward(
    const at::Tensor& regions, const at::Tensor& words, const at::Tensor& cap_lens, double gamma1,
    double gamma2, bool return_attn, std::optional<bool> padded, bool save) {
  return Damsm(regions, words, cap_lens, gamma1, gamma2, padded)
      .forward(return_attn, regions.scalar_type(), save);
}

std::tuple<at::Tensor, at::Tensor> damsm_backward(const at::Tensor& regions,
                                                  const at::Tensor& words,
                                                  const at::Tensor& cap_lens, double gamma1,
                                                  double gamma2, const at::Tensor& dscores,
                                                  std::optional<bool> padded,
                                                  const std::optional<at::Tensor>& saved) {
  return Damsm(regions, words, cap_lens, gamma1, gamma2, padded)
      .backward(dscores, regions.scalar_type(), words.scalar_type(), saved);
}

}  // namespace attnfast
