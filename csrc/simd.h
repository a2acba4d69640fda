// Helpers for the CPU kernels' inner loops: a vectorisable exp and per-ISA function clones.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

// The extension is built for the baseline x86-64 ISA (as torch's wheels are), so the compiler would
// only use SSE2 in our loops. GCC's target_clones compiles the hot loops a second time for
// x86-64-v3 (AVX2 + FMA) and picks the variant once at load time.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(ATTNFAST_NO_CLONES)
#define ATTNFAST_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define ATTNFAST_SIMD_CLONES
#endif

// Helpers called from those clones must be inlined into them, else they run as baseline code.
#define ATTNFAST_ALWAYS_INLINE inline __attribute__((always_inline))

namespace attnfast {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// 8 floats as one value (GCC/Clang vector extension): an AVX register in the x86-64-v3 clones,
// two SSE registers otherwise. For register blocks the auto-vectoriser handles badly.
typedef float Vec8 __attribute__((vector_size(32)));
typedef float Vec8Unaligned __attribute__((vector_size(32), aligned(4)));

ATTNFAST_ALWAYS_INLINE Vec8 load8(const float* p) {
  return *reinterpret_cast<const Vec8Unaligned*>(p);
}
ATTNFAST_ALWAYS_INLINE void store8(float* p, Vec8 v) { *reinterpret_cast<Vec8Unaligned*>(p) = v; }

// exp(x) for float, branch-free so that loops over it vectorise (std::exp does not without
// -ffast-math, which we cannot use: masked scores are -inf; GCC still needs -fno-trapping-math
// to if-convert the clamps). Cephes' expf polynomial after a Cody-Waite range reduction; relative
// error ~2 ulp. Inputs are clamped to [-86, 88], which keeps every result a normal float
// (subnormal arithmetic is slow); callers multiply masked entries by 0, so exp(-inf) need not be 0.
ATTNFAST_ALWAYS_INLINE float fast_exp(float x) {
  x = std::min(std::max(x, -86.0f), 88.0f);
  // k = round(x / ln 2) by the 1.5 * 2^23 trick: no call to floorf, so SSE2 vectorises it too.
  const float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

}  // namespace attnfast
