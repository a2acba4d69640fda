// The torch-facing entry points of attnfast._C (bound in bindings.cpp). Each checks its arguments,
// then runs the CPU kernel or, in a build with ATTNFAST_WITH_CUDA, the CUDA kernel of the tensors'
// device. Inputs may be float32, bfloat16 or float16 and any strides (copied to contiguous);
// accumulation is float32; outputs and gradients come back in the input dtype.
#pragma once

#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace attnfast {

// h (B, C, H, W), words (B, C, T), mask (B, T) bool or none -> out (B, C, H, W) and, if
// return_attn, attn (B, T, H, W) (else an undefined tensor, None in Python).
std::tuple<at::Tensor, at::Tensor> attention_forward(const at::Tensor& h, const at::Tensor& words,
                                                     const std::optional<at::Tensor>& mask,
                                                     bool attngan_mask, bool return_attn);
// -> (dh, dwords); dattn is the gradient of attn when it was returned and used.
std::tuple<at::Tensor, at::Tensor> attention_backward(const at::Tensor& h, const at::Tensor& words,
                                                      const std::optional<at::Tensor>& mask,
                                                      bool attngan_mask, const at::Tensor& dout,
                                                      const std::optional<at::Tensor>& dattn);

// regions (B_i, D, R), words (B_s, D, T), cap_lens (B_s,) integer -> scores (B_i, B_s), if
// return_attn attention (B_i, B_s, T, R), and if save the intermediates the backward needs as one
// float32 tensor of B_i * (B_s*T * (2R + D + 2) + B_s) + 1 elements (sized for the padded word
// count, so that it follows from the shapes alone; undefined tensors, None in Python, for outputs
// not asked for). `padded` picks the word-column layout (see damsm_stages.h);
// default: compact on the CPU, padded on CUDA.
std::tuple<at::Tensor, at::Tensor, at::Tensor> damsm_forward(
    const at::Tensor& regions, const at::Tensor& words, const at::Tensor& cap_lens, double gamma1,
    double gamma2, bool return_attn, std::optional<bool> padded, bool save);
// -> (dregions, dwords) from dscores (B_i, B_s). With `saved` (the forward's, same inputs and
// layout) the probabilities, contexts and cosines are read from it, else recomputed.
std::tuple<at::Tensor, at::Tensor> damsm_backward(const at::Tensor& regions,
                                                  const at::Tensor& words,
                                                  const at::Tensor& cap_lens, double gamma1,
                                                  double gamma2, const at::Tensor& dscores,
                                                  std::optional<bool> padded,
                                                  const std::optional<at::Tensor>& saved);

// GLU along the last dimension of a contiguous CPU matrix x (P, 2H) (an NHWC activation's pixels):
// out (P, H) = x[:, :H] * sigmoid(x[:, H:]); the backward takes dout (P, H) and x -> dx (P, 2H).
// float32, bfloat16 or float16; float32 arithmetic (glu_cpu.cpp).
at::Tensor glu_rows_forward(const at::Tensor& x);
at::Tensor glu_rows_backward(const at::Tensor& grad, const at::Tensor& x);

}  // namespace attnfast
