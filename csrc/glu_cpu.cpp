// GLU along the last dimension of a row-major (P, 2H) matrix on the CPU (issue 27): an NHWC
// (channels_last) activation seen as its P = B*H*W pixels, each pixel's 2H channels one row.
//
// ATen's glu on such a tensor runs one inner loop per pixel over H = 16-64 channels, shorter than a
// bfloat16 vector, so every element takes the scalar tail path (4-8x slower than on NCHW, where a
// half is one long contiguous run). Here a call walks a block of rows, each row's loop vectorised
// (AVX-512 / AVX2 clones picked at load time), sigmoid by simd.h's fast_exp in float32.
//
// forward:  out[p, c] = a * s,                 a = x[p, c], b = x[p, H + c], s = sigmoid(b)
// backward: dx[p, c] = g * s, dx[p, H + c] = g * a * s * (1 - s),   g = dout[p, c]
// float32 arithmetic; x, out, dout and dx in one of float32, bfloat16, float16.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>

#include "ops.h"
#include "simd.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(ATTNFAST_NO_CLONES)
#define ATTNFAST_GLU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ATTNFAST_GLU_CLONES
#endif

namespace attnfast {
namespace {

template <typename scalar_t>
ATTNFAST_ALWAYS_INLINE float load(scalar_t v) { return static_cast<float>(v); }

ATTNFAST_ALWAYS_INLINE float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

// float -> scalar_t; bfloat16 by its bits, branch-free so the store loops vectorise: round to
// nearest even, NaN -> 0x7FC0, as c10 rounds.
template <typename scalar_t>
ATTNFAST_ALWAYS_INLINE scalar_t to_scalar(float v) { return static_cast<scalar_t>(v); }

template <>
ATTNFAST_ALWAYS_INLINE c10::BFloat16 to_scalar<c10::BFloat16>(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof(u));
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint32_t bits = (u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : rounded;
  return c10::BFloat16(static_cast<uint16_t>(bits), c10::BFloat16::from_bits());
}

// kHalf > 0: the row's half length as a compile-time constant (the common 16, 32, 64: loops the
// compiler unrolls into whole vectors); 0: ``half`` at run time.
template <typename scalar_t, int kHalf>
ATTNFAST_GLU_CLONES void forward_rows(const scalar_t* __restrict__ x, scalar_t* __restrict__ out, int64_t rows,
                                      int64_t half_arg) {
  const int64_t half = kHalf > 0 ? kHalf : half_arg;
  for (int64_t r = 0; r < rows; ++r) {
    const scalar_t* a = x + r * 2 * half;
    const scalar_t* b = a + half;
    scalar_t* o = out + r * half;
#pragma omp simd
    for (int64_t c = 0; c < half; ++c) o[c] = to_scalar<scalar_t>(load(a[c]) * sigmoid(load(b[c])));
  }
}

template <typename scalar_t, int kHalf>
ATTNFAST_GLU_CLONES void backward_rows(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x,
                                       scalar_t* __restrict__ dx, int64_t rows, int64_t half_arg) {
  const int64_t half = kHalf > 0 ? kHalf : half_arg;
  for (int64_t r = 0; r < rows; ++r) {
    const scalar_t* a = x + r * 2 * half;
    const scalar_t* b = a + half;
    const scalar_t* g = grad + r * half;
    scalar_t* da = dx + r * 2 * half;
    scalar_t* db = da + half;
#pragma omp simd
    for (int64_t c = 0; c < half; ++c) {
      const float s = sigmoid(load(b[c]));
      const float gv = load(g[c]);
      da[c] = to_scalar<scalar_t>(gv * s);
      db[c] = to_scalar<scalar_t>(gv * load(a[c]) * s * (1.0f - s));
    }
  }
}

void check_rows(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu(), "glu_rows: ", name, " must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "glu_rows: ", name, " must be a contiguous (P, C) matrix, got ",
              x.sizes(), " with strides ", x.strides());
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf,
              "glu_rows: ", name, " must be float32, bfloat16 or float16, got ", dtype);
}

// rows per parallel task: ~16K elements, so a task outweighs the thread pool's dispatch
int64_t grain_rows(int64_t width) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(width, 1)); }

}  // namespace

at::Tensor glu_rows_forward(const at::Tensor& x) {
  check_rows(x, "x");
  TORCH_CHECK(x.size(1) % 2 == 0, "glu_rows: the row length (channels) must be even, got ", x.size(1));
  const int64_t rows = x.size(0), half = x.size(1) / 2;
  at::Tensor out = at::empty({rows, half}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "glu_rows_forward", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain_rows(2 * half), [&](int64_t begin, int64_t end) {
      const scalar_t* in = xp + begin * 2 * half;
      scalar_t* o = op + begin * half;
      switch (half) {
        case 16: forward_rows<scalar_t, 16>(in, o, end - begin, half); break;
        case 32: forward_rows<scalar_t, 32>(in, o, end - begin, half); break;
        case 64: forward_rows<scalar_t, 64>(in, o, end - begin, half); break;
        default: forward_rows<scalar_t, 0>(in, o, end - begin, half);
      }
    });
  });
  return out;
}

at::Tensor glu_rows_backward(const at::Tensor& grad, const at::Tensor& x) {
  check_rows(x, "x");
  check_rows(grad, "grad");
  TORCH_CHECK(grad.scalar_type() == x.scalar_type(), "glu_rows: grad and x must share a dtype, got ",
              grad.scalar_type(), " and ", x.scalar_type());
  TORCH_CHECK(x.size(1) % 2 == 0 && grad.size(0) == x.size(0) && 2 * grad.size(1) == x.size(1),
              "glu_rows: grad must be (P, C/2) for x (P, C), got ", grad.sizes(), " and ", x.sizes());
  const int64_t rows = x.size(0), half = x.size(1) / 2;
  at::Tensor dx = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "glu_rows_backward", [&] {
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* dp = dx.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain_rows(3 * half), [&](int64_t begin, int64_t end) {
      const scalar_t* g = gp + begin * half;
      const scalar_t* in = xp + begin * 2 * half;
      scalar_t* d = dp + begin * 2 * half;
      switch (half) {
        case 16: backward_rows<scalar_t, 16>(g, in, d, end - begin, half); break;
        case 32: backward_rows<scalar_t, 32>(g, in, d, end - begin, half); break;
        case 64: backward_rows<scalar_t, 64>(g, in, d, end - begin, half); break;
        default: backward_rows<scalar_t, 0>(g, in, d, end - begin, half);
      }
    });
  });
  return dx;
}

}  // namespace attnfast
