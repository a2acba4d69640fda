// Launch functions of the CUDA kernels (attention.cu, damsm.cu): raw device pointers, sizes and a
// stream, no torch types, so that the .cu files compile with nvcc alone. Each returns the launch's
// cudaError_t; the torch-facing .cpp glue checks it.
#pragma once

#include <cuda_runtime.h>

#include "attention_shape.h"
#include "damsm_stages.h"

namespace attnfast::cuda {

enum class DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// Each thread of the attention kernels keeps its region's T probabilities (and, backward, their
// gradients) in shared memory: T is bounded so that a block of 32 threads fits in 48 KiB.
constexpr int64_t kMaxCudaWords = 192;

// h, out (B, C, N) and attn (B, T, N) or nullptr in `dtype`; w (B, C, T) float.
cudaError_t attention_forward(const AttentionShape& shape, DType dtype, const void* h,
                              const float* w, void* out, void* attn, cudaStream_t stream);
// dout (B, C, N), dattn (B, T, N) or nullptr, dh (B, C, N) in `dtype`; dwords (B, C, T) float,
// zero-filled by the caller (blocks add their partial sums atomically).
cudaError_t attention_backward(const AttentionShape& shape, DType dtype, const void* h,
                               const float* w, const void* dout, const void* dattn, void* dh,
                               float* dwords, cudaStream_t stream);

// The DAMSM stages of damsm_stages.h; `seg` holds device pointers.
cudaError_t damsm_softmax(float* x, int64_t ld, float* a, int64_t images, int64_t regions,
                          const Segments& seg, float gamma1, cudaStream_t stream);
cudaError_t damsm_softmax_backward(const float* p, float* dx, int64_t ld, const float* a,
                                   float* da, int64_t images, int64_t regions,
                                   const Segments& seg, float gamma1, cudaStream_t stream);
cudaError_t damsm_cosine(const float* ctx, const float* e, const float* e_norm, int64_t images,
                         int64_t dim, int64_t columns, float* cos, float* c_norm,
                         cudaStream_t stream);
cudaError_t damsm_segment_lse(const float* cos, int64_t images, const Segments& seg, float gamma2,
                              float* scores, cudaStream_t stream);
cudaError_t damsm_cosine_grad(const float* cos, const float* c_norm, const float* e_norm,
                              const float* scores, const float* dscores, int64_t images,
                              const Segments& seg, float gamma2, float* alpha, float* beta,
                              float* delta, cudaStream_t stream);
cudaError_t damsm_context_grad(const float* ctx, const float* e, const float* alpha,
                               const float* beta, const float* delta, int64_t images, int64_t dim,
                               int64_t columns, float* dctx, float* de, cudaStream_t stream);

}  // namespace attnfast::cuda
