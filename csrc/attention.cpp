// Torch-facing glue of word-region attention: argument checks, dtype dispatch, CPU or CUDA kernel.
#include <ATen/ATen.h>

#include "attention_cpu.h"
#include "checks.h"
#include "ops.h"

#ifdef ATTNFAST_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda_launch.h"
#endif

namespace attnfast {
namespace {

struct Prepared {
  AttentionShape shape;
  at::Tensor h;      // (B, C, N) contiguous, input dtype
  at::Tensor words;  // (B, C, T) contiguous float32
  at::Tensor mask;   // (B, T) contiguous bool, or undefined
};

Prepared prepare(const at::Tensor& h, const at::Tensor& words, const std::optional<at::Tensor>& mask,
                 bool attngan_mask) {
  check_features("h", h, 4, "(B, C, H, W)");
  check_features("words", words, 3, "(B, C, T)");
  check_same("words", words, "h", h);
  const int64_t B = h.size(0), C = h.size(1), N = h.size(2) * h.size(3), T = words.size(2);
  TORCH_CHECK(words.size(0) == B && words.size(1) == C, "words must have shape (B, C, T) = (", B,
              ", ", C, ", T), got ", words.sizes());
  Prepared p{{B, C, N, T, nullptr, attngan_mask}, h.reshape({B, C, N}).contiguous(),
             words.to(at::kFloat).contiguous(), at::Tensor()};
  if (mask.has_value() && mask->defined()) {
    TORCH_CHECK(mask->scalar_type() == at::kBool, "mask must be a bool tensor, got ",
                mask->scalar_type());
    TORCH_CHECK(mask->dim() == 2 && mask->size(0) == B && mask->size(1) == T,
                "mask must have shape (B, T) = (", B, ", ", T, "), got ", mask->sizes());
    TORCH_CHECK(mask->device() == h.device(), "mask is on ", mask->device(), " but h is on ",
                h.device());
    p.mask = mask->contiguous();
    p.shape.mask = p.mask.data_ptr<bool>();
  }
#ifdef ATTNFAST_WITH_CUDA
  TORCH_CHECK(!h.is_cuda() || T <= cuda::kMaxCudaWords, "the CUDA attention kernels take at most ",
              cuda::kMaxCudaWords, " words (T), got T = ", T);
  TORCH_CHECK(!h.is_cuda() || B <= 65535, "the CUDA attention kernels take at most 65535 captions "
              "(B), got B = ", B);
#endif
  return p;
}

#ifdef ATTNFAST_WITH_CUDA
cuda::DType cuda_dtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return cuda::DType::kFloat32;
    case at::kBFloat16: return cuda::DType::kBFloat16;
    default: return cuda::DType::kFloat16;
  }
}
#endif

template <typename Fn>
void dispatch_cpu(at::ScalarType type, const Fn& fn) {
  switch (type) {
    case at::kFloat: fn(float{}); break;
    case at::kBFloat16: fn(c10::BFloat16{}); break;
    case at::kHalf: fn(c10::Half{}); break;
    default: TORCH_CHECK(false, "attnfast._C: unsupported dtype ", type);
  }
}

template <typename T>
T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> attention_forward(const at::Tensor& h, const at::Tensor& words,
                                                     const std::optional<at::Tensor>& mask,
                                                     bool attngan_mask, bool return_attn) {
  Prepared p = prepare(h, words, mask, attngan_mask);
  const AttentionShape& s = p.shape;
  at::Tensor out = at::empty_like(p.h);
  at::Tensor attn = return_attn ? at::empty({s.batch, s.words, s.regions}, p.h.options())
                                : at::Tensor();
  if (h.is_cuda()) {
#ifdef ATTNFAST_WITH_CUDA
    const c10::cuda::CUDAGuard guard(h.device());
    check_cuda(cuda::attention_forward(s, cuda_dtype(h.scalar_type()), p.h.data_ptr(),
                                       p.words.data_ptr<float>(), out.data_ptr(),
                                       attn.defined() ? attn.data_ptr() : nullptr,
                                       c10::cuda::getCurrentCUDAStream()),
               "attention_forward");
#endif
  } else {
    dispatch_cpu(h.scalar_type(), [&](auto tag) {
      using scalar_t = decltype(tag);
      cpu::attention_forward<scalar_t>(s, p.h.data_ptr<scalar_t>(), p.words.data_ptr<float>(),
                                       out.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(attn));
    });
  }
  out = out.view(h.sizes());
  if (attn.defined()) attn = attn.view({s.batch, s.words, h.size(2), h.size(3)});
  return {out, attn};
}

std::tuple<at::Tensor, at::Tensor> attention_backward(const at::Tensor& h, const at::Tensor& words,
                                                      const std::optional<at::Tensor>& mask,
                                                      bool attngan_mask, const at::Tensor& dout,
                                                      const std::optional<at::Tensor>& dattn) {
  Prepared p = prepare(h, words, mask, attngan_mask);
  const AttentionShape& s = p.shape;
  TORCH_CHECK(dout.sizes() == h.sizes(), "dout must have the shape of h ", h.sizes(), ", got ",
              dout.sizes());
  at::Tensor g = dout.to(h.scalar_type()).reshape({s.batch, s.channels, s.regions}).contiguous();
  at::Tensor ga;
  if (dattn.has_value() && dattn->defined()) {
    TORCH_CHECK(dattn->numel() == s.batch * s.words * s.regions,
                "dattn must have shape (B, T, H, W), got ", dattn->sizes());
    ga = dattn->to(h.scalar_type()).reshape({s.batch, s.words, s.regions}).contiguous();
  }
  at::Tensor dh = at::empty_like(p.h);
  at::Tensor dwords = h.is_cuda() ? at::zeros_like(p.words) : at::empty_like(p.words);
  if (h.is_cuda()) {
#ifdef ATTNFAST_WITH_CUDA
    const c10::cuda::CUDAGuard guard(h.device());
    check_cuda(cuda::attention_backward(s, cuda_dtype(h.scalar_type()), p.h.data_ptr(),
                                        p.words.data_ptr<float>(), g.data_ptr(),
                                        ga.defined() ? ga.data_ptr() : nullptr, dh.data_ptr(),
                                        dwords.data_ptr<float>(),
                                        c10::cuda::getCurrentCUDAStream()),
               "attention_backward");
#endif
  } else {
    dispatch_cpu(h.scalar_type(), [&](auto tag) {
      using scalar_t = decltype(tag);
      cpu::attention_backward<scalar_t>(s, p.h.data_ptr<scalar_t>(), p.words.data_ptr<float>(),
                                        g.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(ga),
                                        dh.data_ptr<scalar_t>(), dwords.data_ptr<float>());
    });
  }
  return {dh.view(h.sizes()), dwords.to(words.scalar_type())};
}

}  // namespace attnfast
