// CUDA versions of the DAMSM element-wise stages (damsm_stages.h); damsm.cpp runs the GEMMs
// around them with cuBLAS through ATen. The softmax stages take one block per (image, sentence),
// its threads spread over the regions; the cosine stages one thread per (image, word column), so
// that consecutive threads read consecutive columns. Mirrors damsm_cpu.cpp.
#include <cuda_runtime.h>

#include "cuda_launch.h"
#include "launch_config.h"

namespace attnfast::cuda {
namespace {

constexpr int kThreads = kDamsmThreads;

// Grid-stride loop over [0, total).
#define ATTNFAST_FOR_EACH(index, total)                                                     \
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;        \
       index < (total); index += static_cast<int64_t>(gridDim.x) * blockDim.x)

unsigned grid_for(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 8 ? 65535 * 8 : blocks));
}

unsigned blocks_for(int64_t tasks) {  // one block per task, grid-stride beyond the cap
  return static_cast<unsigned>(tasks < 1 ? 1 : (tasks > 65535 * 8 ? 65535 * 8 : tasks));
}

__device__ __forceinline__ int64_t segment_end(const Segments& seg, int64_t i) {
  return i + 1 < seg.count ? seg.start[i + 1] : seg.columns;
}

__device__ __forceinline__ bool live_column(const Segments& seg, int64_t k) {
  const int64_t i = seg.column_segment[k];
  return k - seg.start[i] < seg.length[i];
}

// Sum (or max) of v over the block, returned to every thread. blockDim.x is a multiple of 32.
template <bool kMax>
__device__ float block_reduce(float v, float* partial) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float w = __shfl_xor_sync(0xffffffffu, v, offset);
    v = kMax ? fmaxf(v, w) : v + w;
  }
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : (kMax ? -INFINITY : 0.0f);
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float w = __shfl_xor_sync(0xffffffffu, v, offset);
    v = kMax ? fmaxf(v, w) : v + w;
  }
  __syncthreads();  // `partial` is free again once every thread has read it
  return v;
}

// One block per (image, sentence); thread t handles the regions r = t, t + blockDim, ...
// The softmax over words runs down the rows per region (no communication), the softmax over
// regions along each row with block reductions.
__global__ void softmax_kernel(float* x, int64_t ld, float* a, int64_t images, int64_t regions,
                               Segments seg, float gamma1) {
  __shared__ float partial[32];
  const int64_t R = regions;
  for (int64_t task = blockIdx.x; task < images * seg.count; task += gridDim.x) {
    const int64_t j = task / seg.count, i = task % seg.count;
    const int64_t s = seg.start[i], len = seg.length[i], stop = segment_end(seg, i);
    float* xb = x + s * ld + j * R;
    float* ab = a + (j * seg.columns + s) * R;
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x) {
      float peak = -INFINITY;
      for (int64_t k = 0; k < len; ++k) peak = fmaxf(peak, xb[k * ld + r]);
      float total = 0.0f;
      for (int64_t k = 0; k < len; ++k) {
        const float e = expf(xb[k * ld + r] - peak);
        xb[k * ld + r] = e;
        total += e;
      }
      const float inv = 1.0f / total;
      for (int64_t k = 0; k < len; ++k) xb[k * ld + r] *= inv;
      for (int64_t k = len; k < stop - s; ++k) {
        xb[k * ld + r] = 0.0f;
        ab[k * R + r] = 0.0f;
      }
    }
    for (int64_t k = 0; k < len; ++k) {
      const float* xk = xb + k * ld;
      float* ak = ab + k * R;
      float top = -INFINITY;
      for (int64_t r = threadIdx.x; r < R; r += blockDim.x) top = fmaxf(top, gamma1 * xk[r]);
      top = block_reduce<true>(top, partial);
      float total = 0.0f;
      for (int64_t r = threadIdx.x; r < R; r += blockDim.x) {
        const float e = expf(gamma1 * xk[r] - top);
        ak[r] = e;
        total += e;
      }
      const float inv = 1.0f / block_reduce<false>(total, partial);
      for (int64_t r = threadIdx.x; r < R; r += blockDim.x) ak[r] *= inv;
    }
  }
}

__global__ void softmax_backward_kernel(const float* p, float* dx, int64_t ld, const float* a,
                                        float* da, int64_t images, int64_t regions, Segments seg,
                                        float gamma1) {
  __shared__ float partial[32];
  const int64_t R = regions;
  for (int64_t task = blockIdx.x; task < images * seg.count; task += gridDim.x) {
    const int64_t j = task / seg.count, i = task % seg.count;
    const int64_t s = seg.start[i], len = seg.length[i], stop = segment_end(seg, i);
    const float* pb = p + s * ld + j * R;
    float* xb = dx + s * ld + j * R;  // may be pb: each thread reads its column before writing it
    const float* ab = a + (j * seg.columns + s) * R;
    float* gb = da + (j * seg.columns + s) * R;
    for (int64_t k = 0; k < len; ++k) {  // dP1 = gamma1 * a * (da - <a, da>) per word
      float dot = 0.0f;
      for (int64_t r = threadIdx.x; r < R; r += blockDim.x) dot += ab[k * R + r] * gb[k * R + r];
      dot = block_reduce<false>(dot, partial);
      for (int64_t r = threadIdx.x; r < R; r += blockDim.x) {
        gb[k * R + r] = gamma1 * ab[k * R + r] * (gb[k * R + r] - dot);
      }
    }
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x) {  // dX = P1 * (dP1 - <P1, dP1>)
      float dot = 0.0f;
      for (int64_t k = 0; k < len; ++k) dot += pb[k * ld + r] * gb[k * R + r];
      for (int64_t k = 0; k < len; ++k) xb[k * ld + r] = pb[k * ld + r] * (gb[k * R + r] - dot);
      for (int64_t k = len; k < stop - s; ++k) xb[k * ld + r] = 0.0f;
    }
  }
}

__global__ void cosine_kernel(const float* ctx, const float* e, const float* e_norm,
                              int64_t images, int64_t dim, int64_t columns, float* cos,
                              float* c_norm) {
  ATTNFAST_FOR_EACH(task, images * columns) {
    const int64_t j = task / columns, k = task % columns;
    const float* c = ctx + j * dim * columns + k;
    float dot = 0.0f, sq = 0.0f;
    for (int64_t d = 0; d < dim; ++d) {
      const float cv = c[d * columns];
      dot += cv * e[d * columns + k];
      sq += cv * cv;
    }
    const float norm = sqrtf(sq);
    c_norm[task] = norm;
    cos[task] = dot / fmaxf(norm * e_norm[k], kCosineEps);
  }
}

__global__ void segment_lse_kernel(const float* cos, int64_t images, Segments seg, float gamma2,
                                   float* scores) {
  ATTNFAST_FOR_EACH(task, images * seg.count) {
    const int64_t j = task / seg.count, i = task % seg.count;
    const float* x = cos + j * seg.columns + seg.start[i];
    float peak = -INFINITY;
    for (int64_t t = 0; t < seg.length[i]; ++t) peak = fmaxf(peak, gamma2 * x[t]);
    float total = 0.0f;
    for (int64_t t = 0; t < seg.length[i]; ++t) total += expf(gamma2 * x[t] - peak);
    scores[task] = peak + logf(total);
  }
}

__global__ void cosine_grad_kernel(const float* cos, const float* c_norm, const float* e_norm,
                                   const float* scores, const float* dscores, int64_t images,
                                   Segments seg, float gamma2, float* alpha, float* beta,
                                   float* delta) {
  const int64_t K = seg.columns;
  ATTNFAST_FOR_EACH(task, images * K) {
    const int64_t j = task / K, k = task % K, i = seg.column_segment[k];
    float al = 0.0f, be = 0.0f, de = 0.0f;
    if (live_column(seg, k)) {
      const float g = dscores[j * seg.count + i] * gamma2 *
                      expf(gamma2 * cos[task] - scores[j * seg.count + i]);
      const float cn = c_norm[task], en = e_norm[k], den = cn * en;
      if (den >= kCosineEps) {  // torch's clamp(min) passes the gradient where x >= min
        al = g / den;
        be = g * cos[task] / (cn * cn);
        de = g * cos[task] / (en * en);
      } else {
        al = g / kCosineEps;
      }
    }
    alpha[task] = al;
    beta[task] = be;
    delta[task] = de;
  }
}

// One thread per (d, k): it owns de[d][k] and sums over the images, so no atomics.
__global__ void context_grad_kernel(const float* ctx, const float* e, const float* alpha,
                                    const float* beta, const float* delta, int64_t images,
                                    int64_t dim, int64_t columns, float* dctx, float* de) {
  ATTNFAST_FOR_EACH(task, dim * columns) {
    const int64_t k = task % columns;
    const float w = e[task];
    float acc = 0.0f;
    for (int64_t j = 0; j < images; ++j) {
      const int64_t at = j * dim * columns + task, ak = j * columns + k;
      const float c = ctx[at];
      dctx[at] = alpha[ak] * w - beta[ak] * c;
      acc += alpha[ak] * c - delta[ak] * w;
    }
    de[task] += acc;
  }
}

}  // namespace

cudaError_t damsm_softmax(float* x, int64_t ld, float* a, int64_t images, int64_t regions,
                          const Segments& seg, float gamma1, cudaStream_t stream) {
  softmax_kernel<<<blocks_for(images * seg.count), kThreads, 0, stream>>>(x, ld, a, images,
                                                                          regions, seg, gamma1);
  return cudaGetLastError();
}

cudaError_t damsm_softmax_backward(const float* p, float* dx, int64_t ld, const float* a,
                                   float* da, int64_t images, int64_t regions,
                                   const Segments& seg, float gamma1, cudaStream_t stream) {
  softmax_backward_kernel<<<blocks_for(images * seg.count), kThreads, 0, stream>>>(
      p, dx, ld, a, da, images, regions, seg, gamma1);
  return cudaGetLastError();
}

cudaError_t damsm_cosine(const float* ctx, const float* e, const float* e_norm, int64_t images,
                         int64_t dim, int64_t columns, float* cos, float* c_norm,
                         cudaStream_t stream) {
  cosine_kernel<<<grid_for(images * columns), kThreads, 0, stream>>>(ctx, e, e_norm, images, dim,
                                                                     columns, cos, c_norm);
  return cudaGetLastError();
}

cudaError_t damsm_segment_lse(const float* cos, int64_t images, const Segments& seg, float gamma2,
                              float* scores, cudaStream_t stream) {
  segment_lse_kernel<<<grid_for(images * seg.count), kThreads, 0, stream>>>(cos, images, seg,
                                                                            gamma2, scores);
  return cudaGetLastError();
}

cudaError_t damsm_cosine_grad(const float* cos, const float* c_norm, const float* e_norm,
                              const float* scores, const float* dscores, int64_t images,
                              const Segments& seg, float gamma2, float* alpha, float* beta,
                              float* delta, cudaStream_t stream) {
  cosine_grad_kernel<<<grid_for(images * seg.columns), kThreads, 0, stream>>>(
      cos, c_norm, e_norm, scores, dscores, images, seg, gamma2, alpha, beta, delta);
  return cudaGetLastError();
}

cudaError_t damsm_context_grad(const float* ctx, const float* e, const float* alpha,
                               const float* beta, const float* delta, int64_t images, int64_t dim,
                               int64_t columns, float* dctx, float* de, cudaStream_t stream) {
  context_grad_kernel<<<grid_for(dim * columns), kThreads, 0, stream>>>(
      ctx, e, alpha, beta, delta, images, dim, columns, dctx, de);
  return cudaGetLastError();
}

}  // namespace attnfast::cuda
