// CUDA kernels of word-region attention (DESIGN.md §3.1). One thread per region n of caption b:
// its T scores, probabilities and (backward) their gradients live in a per-thread column of shared
// memory; the words w[b] (C x T, float) are read through the read-only cache, where every thread
// of a block reads the same address. Mirrors attention_cpu.cpp, with the region tile = the block.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda_launch.h"
#include "launch_config.h"

namespace attnfast::cuda {
namespace {

constexpr int kWordChunk = 8;  // scores per register block while reading a column of h

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ float load(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float v) {
  p[i] = __float2bfloat16(v);
}
__device__ __forceinline__ void store(__half* p, int64_t i, float v) { p[i] = __float2half(v); }

// A thread's column of T floats in shared memory: element t at col[t * stride].
struct Column {
  float* base;
  int stride;
  __device__ float& operator[](int64_t t) const { return base[t * stride]; }
};

__device__ __forceinline__ bool kept(const AttentionShape& s, int64_t b, int64_t n, int64_t t) {
  if (s.mask == nullptr) return true;
  const int64_t caption = s.attngan_mask ? (b * s.regions + n) % s.batch : b;
  return !s.mask[caption * s.words + t];
}

// col[t] = sum_c x[c * N + n] * w[c * T + t]   (x: one caption's (C, N) plane)
template <typename T>
__device__ void project(const T* x, const float* w, const AttentionShape& s, int64_t n,
                        Column col) {
  const int64_t C = s.channels, N = s.regions, W = s.words;
  for (int64_t t0 = 0; t0 < W; t0 += kWordChunk) {
    float acc[kWordChunk];
#pragma unroll
    for (int k = 0; k < kWordChunk; ++k) acc[k] = 0.0f;
    for (int64_t c = 0; c < C; ++c) {
      const float xv = load(x, c * N + n);
      const float* wr = w + c * W + t0;
#pragma unroll
      for (int k = 0; k < kWordChunk; ++k) {
        if (t0 + k < W) acc[k] += xv * __ldg(wr + k);
      }
    }
#pragma unroll
    for (int k = 0; k < kWordChunk; ++k) {
      if (t0 + k < W) col[t0 + k] = acc[k];
    }
  }
}

// In place: scores -> softmax over the kept words; no kept word -> all zeros.
__device__ void softmax(const AttentionShape& s, int64_t b, int64_t n, Column col) {
  float peak = -INFINITY;
  for (int64_t t = 0; t < s.words; ++t) {
    if (kept(s, b, n, t)) peak = fmaxf(peak, col[t]);
  }
  float total = 0.0f;
  for (int64_t t = 0; t < s.words; ++t) {
    const float e = kept(s, b, n, t) ? expf(col[t] - peak) : 0.0f;
    col[t] = e;
    total += e;
  }
  const float inv = total > 0.0f ? 1.0f / total : 0.0f;
  for (int64_t t = 0; t < s.words; ++t) col[t] *= inv;
}

template <typename T>
__global__ void attention_forward_kernel(AttentionShape s, const T* h, const float* w, T* out,
                                         T* attn) {
  extern __shared__ float smem[];
  const int64_t b = blockIdx.y;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= s.regions) return;  // no block-wide synchronisation below
  const int64_t C = s.channels, N = s.regions, W = s.words;
  const float* wb = w + b * C * W;
  const Column p{smem + threadIdx.x, static_cast<int>(blockDim.x)};
  project(h + b * C * N, wb, s, n, p);
  softmax(s, b, n, p);
  if (attn != nullptr) {
    for (int64_t t = 0; t < W; ++t) store(attn, (b * W + t) * N + n, p[t]);
  }
  for (int64_t c = 0; c < C; ++c) {
    float acc = 0.0f;
    for (int64_t t = 0; t < W; ++t) acc += p[t] * __ldg(wb + c * W + t);
    store(out, (b * C + c) * N + n, acc);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T>
__global__ void attention_backward_kernel(AttentionShape s, const T* h, const float* w,
                                          const T* dout, const T* dattn, T* dh, float* dwords) {
  extern __shared__ float smem[];
  const int64_t b = blockIdx.y;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  // Threads past the last region stay to the end (with zeros) for the warp reductions.
  const bool active = n < s.regions;
  const int64_t C = s.channels, N = s.regions, W = s.words;
  const float* wb = w + b * C * W;
  const T* hb = h + b * C * N;
  const T* gb = dout + b * C * N;
  const Column p{smem + threadIdx.x, static_cast<int>(blockDim.x)};
  const Column ds{smem + W * blockDim.x + threadIdx.x, static_cast<int>(blockDim.x)};
  if (active) {
    project(hb, wb, s, n, p);
    softmax(s, b, n, p);
    project(gb, wb, s, n, ds);  // dp = sum_c dout[c] w[c, t]
    float dot = 0.0f;
    for (int64_t t = 0; t < W; ++t) {
      if (dattn != nullptr) ds[t] += load(dattn, (b * W + t) * N + n);
      dot += p[t] * ds[t];
    }
    for (int64_t t = 0; t < W; ++t) ds[t] = p[t] * (ds[t] - dot);
    for (int64_t c = 0; c < C; ++c) {
      float acc = 0.0f;
      for (int64_t t = 0; t < W; ++t) acc += ds[t] * __ldg(wb + c * W + t);
      store(dh, (b * C + c) * N + n, acc);
    }
  } else {
    for (int64_t t = 0; t < W; ++t) p[t] = ds[t] = 0.0f;
  }
  // dwords[b, c, t] += sum over this block's regions of dout[c, n] p[t] + h[c, n] ds[t]
  const bool leader = (threadIdx.x & 31) == 0;
  for (int64_t c = 0; c < C; ++c) {
    const float gv = active ? load(gb, c * N + n) : 0.0f;
    const float hv = active ? load(hb, c * N + n) : 0.0f;
    for (int64_t t = 0; t < W; ++t) {
      const float v = warp_sum(gv * p[t] + hv * ds[t]);
      if (leader) atomicAdd(dwords + (b * C + c) * W + t, v);
    }
  }
}

template <typename T>
cudaError_t launch_forward(const AttentionShape& s, const void* h, const float* w, void* out,
                           void* attn, cudaStream_t stream) {
  const int threads = attention_block_threads(s.words, 1);
  const size_t shared = static_cast<size_t>(attention_shared_bytes(s.words, 1));
  const dim3 grid(static_cast<unsigned>((s.regions + threads - 1) / threads),
                  static_cast<unsigned>(s.batch));
  attention_forward_kernel<T><<<grid, threads, shared, stream>>>(
      s, static_cast<const T*>(h), w, static_cast<T*>(out), static_cast<T*>(attn));
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_backward(const AttentionShape& s, const void* h, const float* w,
                            const void* dout, const void* dattn, void* dh, float* dwords,
                            cudaStream_t stream) {
  const int threads = attention_block_threads(s.words, 2);
  const size_t shared = static_cast<size_t>(attention_shared_bytes(s.words, 2));
  const dim3 grid(static_cast<unsigned>((s.regions + threads - 1) / threads),
                  static_cast<unsigned>(s.batch));
  attention_backward_kernel<T><<<grid, threads, shared, stream>>>(
      s, static_cast<const T*>(h), w, static_cast<const T*>(dout), static_cast<const T*>(dattn),
      static_cast<T*>(dh), dwords);
  return cudaGetLastError();
}

bool launchable(const AttentionShape& s) {
  return s.words >= 1 && s.words <= kMaxCudaWords && s.batch >= 1 && s.batch <= 65535;
}

}  // namespace

cudaError_t attention_forward(const AttentionShape& shape, DType dtype, const void* h,
                              const float* w, void* out, void* attn, cudaStream_t stream) {
  if (!launchable(shape)) return cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kFloat32: return launch_forward<float>(shape, h, w, out, attn, stream);
    case DType::kBFloat16: return launch_forward<__nv_bfloat16>(shape, h, w, out, attn, stream);
    case DType::kFloat16: return launch_forward<__half>(shape, h, w, out, attn, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t attention_backward(const AttentionShape& shape, DType dtype, const void* h,
                               const float* w, const void* dout, const void* dattn, void* dh,
                               float* dwords, cudaStream_t stream) {
  if (!launchable(shape)) return cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kFloat32:
      return launch_backward<float>(shape, h, w, dout, dattn, dh, dwords, stream);
    case DType::kBFloat16:
      return launch_backward<__nv_bfloat16>(shape, h, w, dout, dattn, dh, dwords, stream);
    case DType::kFloat16:
      return launch_backward<__half>(shape, h, w, dout, dattn, dh, dwords, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace attnfast::cuda
