// Word-region attention on the CPU (DESIGN.md §3.1), over raw contiguous buffers.
#pragma once

#include "attention_shape.h"

namespace attnfast::cpu {

// h (B, C, N) and out (B, C, N) in scalar_t; w (B, C, T) float; attn (B, T, N) or nullptr.
template <typename scalar_t>
void attention_forward(const AttentionShape& shape, const scalar_t* h, const float* w,
                       scalar_t* out, scalar_t* attn);

// dout (B, C, N); dattn (B, T, N) or nullptr; writes dh (B, C, N) and dwords (B, C, T) float.
// The probabilities are recomputed tile by tile, never stored.
template <typename scalar_t>
void attention_backward(const AttentionShape& shape, const scalar_t* h, const float* w,
                        const scalar_t* dout, const scalar_t* dattn, scalar_t* dh, float* dwords);

}  // namespace attnfast::cpu
