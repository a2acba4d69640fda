// CPU versions of the DAMSM element-wise stages (see damsm_stages.h). The softmax stages run in
// parallel over (image, sentence) blocks, the cosine stages over (image, chunk of kWidth word
// columns); every inner loop runs over contiguous memory.
#include <algorithm>
#include <cmath>
#include <vector>

#include <ATen/Parallel.h>

#include "damsm_stages.h"
#include "simd.h"

namespace attnfast::cpu {
namespace {

constexpr int64_t kWidth = 128;  // columns per task of the column-wise stages

int64_t segment_end(const Segments& seg, int64_t i) {
  return i + 1 < seg.count ? seg.start[i + 1] : seg.columns;
}

// Runs fn(j, k0, width) over every (image, column chunk) in parallel.
template <typename Fn>
void for_column_chunks(int64_t images, int64_t columns, const Fn& fn) {
  const int64_t chunks = (columns + kWidth - 1) / kWidth;
  at::parallel_for(0, images * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t k0 = (task % chunks) * kWidth;
      fn(task / chunks, k0, std::min(kWidth, columns - k0));
    }
  });
}

// One (image, sentence) block: rows [s, s + len) of x (stride ld) and of a (stride regions).
// Forward: the softmax over words runs down the rows (vectorised over the regions), then the
// softmax over regions along each row; the block (len x R floats) stays in L1.
ATTNFAST_SIMD_CLONES
void softmax_block(float* x, int64_t ld, float* a, int64_t regions, int64_t len, int64_t dead,
                   float gamma1, float* peak, float* total) {
  const int64_t R = regions;
  for (int64_t r = 0; r < R; ++r) { peak[r] = kNegInf; total[r] = 0.0f; }
  for (int64_t k = 0; k < len; ++k) {
    const float* xk = x + k * ld;
    for (int64_t r = 0; r < R; ++r) peak[r] = std::max(peak[r], xk[r]);
  }
  for (int64_t k = 0; k < len; ++k) {
    float* xk = x + k * ld;
    for (int64_t r = 0; r < R; ++r) {
      xk[r] = fast_exp(xk[r] - peak[r]);
      total[r] += xk[r];
    }
  }
  for (int64_t r = 0; r < R; ++r) total[r] = 1.0f / total[r];
  for (int64_t k = 0; k < len; ++k) {
    float* xk = x + k * ld;
    float* ak = a + k * R;
    float top = kNegInf;
#pragma omp simd reduction(max : top)
    for (int64_t r = 0; r < R; ++r) {
      xk[r] *= total[r];  // P1
      top = std::max(top, gamma1 * xk[r]);
    }
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t r = 0; r < R; ++r) {
      ak[r] = fast_exp(gamma1 * xk[r] - top);
      sum += ak[r];
    }
    const float inv = 1.0f / sum;
    for (int64_t r = 0; r < R; ++r) ak[r] *= inv;
  }
  for (int64_t k = len; k < len + dead; ++k) {
    std::fill(x + k * ld, x + k * ld + R, 0.0f);
    std::fill(a + k * R, a + (k + 1) * R, 0.0f);
  }
}

// Backward of softmax_block: da -> dP1 = gamma1 * a * (da - <a, da>) per row, then
// dx = dX = P1 * (dP1 - sum over the words of P1 * dP1) per region, from p = P1 (dx may be p).
ATTNFAST_SIMD_CLONES
void softmax_backward_block(const float* p, float* dx, int64_t ld, const float* a, float* da,
                            int64_t regions, int64_t len, int64_t dead, float gamma1, float* dot) {
  const int64_t R = regions;
  for (int64_t r = 0; r < R; ++r) dot[r] = 0.0f;
  for (int64_t k = 0; k < len; ++k) {
    const float* ak = a + k * R;
    float* gk = da + k * R;
    const float* pk = p + k * ld;
    float row = 0.0f;
#pragma omp simd reduction(+ : row)
    for (int64_t r = 0; r < R; ++r) row += ak[r] * gk[r];
    for (int64_t r = 0; r < R; ++r) {
      gk[r] = gamma1 * ak[r] * (gk[r] - row);
      dot[r] += pk[r] * gk[r];
    }
  }
  for (int64_t k = 0; k < len; ++k) {
    const float* pk = p + k * ld;
    float* dk = dx + k * ld;
    const float* gk = da + k * R;
    for (int64_t r = 0; r < R; ++r) dk[r] = pk[r] * (gk[r] - dot[r]);
  }
  for (int64_t k = len; k < len + dead; ++k) std::fill(dx + k * ld, dx + k * ld + R, 0.0f);
}

// Runs fn(j, i, scratch) over every (image, sentence) in parallel; scratch holds 2 * regions floats.
template <typename Fn>
void for_blocks(int64_t images, int64_t regions, const Segments& seg, const Fn& fn) {
  at::parallel_for(0, images * seg.count, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(2 * regions);
    for (int64_t task = begin; task < end; ++task) {
      fn(task / seg.count, task % seg.count, scratch.data());
    }
  });
}

ATTNFAST_SIMD_CLONES
void cosine_chunk(const float* ctx, const float* e, const float* e_norm, int64_t dim,
                  int64_t columns, int64_t width, float* cos, float* c_norm) {
  float dot[kWidth] = {}, sq[kWidth] = {};
  for (int64_t d = 0; d < dim; ++d) {
    const float* c = ctx + d * columns;
    const float* w = e + d * columns;
    for (int64_t k = 0; k < width; ++k) {
      dot[k] += c[k] * w[k];
      sq[k] += c[k] * c[k];
    }
  }
  for (int64_t k = 0; k < width; ++k) {
    const float norm = std::sqrt(sq[k]);
    c_norm[k] = norm;
    cos[k] = dot[k] / std::max(norm * e_norm[k], kCosineEps);
  }
}

ATTNFAST_SIMD_CLONES
void context_grad_chunk(const float* ctx, const float* e, const float* alpha, const float* beta,
                        const float* delta, int64_t images, int64_t dim, int64_t columns,
                        int64_t width, float* dctx, float* de) {
  for (int64_t d = 0; d < dim; ++d) {
    const float* w = e + d * columns;
    float acc[kWidth] = {};
    for (int64_t j = 0; j < images; ++j) {
      const float* c = ctx + (j * dim + d) * columns;
      float* g = dctx + (j * dim + d) * columns;
      const float* al = alpha + j * columns;
      const float* be = beta + j * columns;
      const float* de_coef = delta + j * columns;
      for (int64_t k = 0; k < width; ++k) {
        g[k] = al[k] * w[k] - be[k] * c[k];
        acc[k] += al[k] * c[k] - de_coef[k] * w[k];
      }
    }
    for (int64_t k = 0; k < width; ++k) de[d * columns + k] += acc[k];
  }
}

}  // namespace

void damsm_softmax(float* x, int64_t ld, float* a, int64_t images, int64_t regions,
                   const Segments& seg, float gamma1) {
  const int64_t K = seg.columns;
  for_blocks(images, regions, seg, [&](int64_t j, int64_t i, float* scratch) {
    const int64_t s = seg.start[i], len = seg.length[i];
    softmax_block(x + s * ld + j * regions, ld, a + (j * K + s) * regions, regions, len,
                  segment_end(seg, i) - s - len, gamma1, scratch, scratch + regions);
  });
}

void damsm_softmax_backward(const float* p, float* dx, int64_t ld, const float* a, float* da,
                            int64_t images, int64_t regions, const Segments& seg, float gamma1) {
  const int64_t K = seg.columns;
  for_blocks(images, regions, seg, [&](int64_t j, int64_t i, float* scratch) {
    const int64_t s = seg.start[i], len = seg.length[i], offset = (j * K + s) * regions;
    const int64_t x_offset = s * ld + j * regions;
    softmax_backward_block(p + x_offset, dx + x_offset, ld, a + offset, da + offset, regions, len,
                           segment_end(seg, i) - s - len, gamma1, scratch);
  });
}

void damsm_cosine(const float* ctx, const float* e, const float* e_norm, int64_t images,
                  int64_t dim, int64_t columns, float* cos, float* c_norm) {
  for_column_chunks(images, columns, [&](int64_t j, int64_t k0, int64_t width) {
    cosine_chunk(ctx + j * dim * columns + k0, e + k0, e_norm + k0, dim, columns, width,
                 cos + j * columns + k0, c_norm + j * columns + k0);
  });
}

void damsm_segment_lse(const float* cos, int64_t images, const Segments& seg, float gamma2,
                       float* scores) {
  at::parallel_for(0, images * seg.count, 64, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t j = task / seg.count, i = task % seg.count;
      const float* x = cos + j * seg.columns + seg.start[i];
      float peak = kNegInf;
      for (int64_t t = 0; t < seg.length[i]; ++t) peak = std::max(peak, gamma2 * x[t]);
      float total = 0.0f;
      for (int64_t t = 0; t < seg.length[i]; ++t) total += std::exp(gamma2 * x[t] - peak);
      scores[task] = peak + std::log(total);
    }
  });
}

void damsm_cosine_grad(const float* cos, const float* c_norm, const float* e_norm,
                       const float* scores, const float* dscores, int64_t images,
                       const Segments& seg, float gamma2, float* alpha, float* beta,
                       float* delta) {
  const int64_t K = seg.columns;
  at::parallel_for(0, images * K, 256, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t j = task / K, k = task % K, i = seg.column_segment[k];
      alpha[task] = beta[task] = delta[task] = 0.0f;
      if (k - seg.start[i] >= seg.length[i]) continue;  // dead column
      // d score / d cos_k = gamma2 * softmax_k(gamma2 * cos)
      const float g = dscores[j * seg.count + i] * gamma2 *
                      std::exp(gamma2 * cos[task] - scores[j * seg.count + i]);
      const float cn = c_norm[task], en = e_norm[k], den = cn * en;
      if (den >= kCosineEps) {  // torch's clamp(min) passes the gradient where x >= min
        alpha[task] = g / den;
        beta[task] = g * cos[task] / (cn * cn);
        delta[task] = g * cos[task] / (en * en);
      } else {
        alpha[task] = g / kCosineEps;
      }
    }
  });
}

void damsm_context_grad(const float* ctx, const float* e, const float* alpha, const float* beta,
                        const float* delta, int64_t images, int64_t dim, int64_t columns,
                        float* dctx, float* de) {
  // Parallel over column chunks only: de sums over the images, so one task owns its columns.
  for_column_chunks(1, columns, [&](int64_t, int64_t k0, int64_t width) {
    context_grad_chunk(ctx + k0, e + k0, alpha + k0, beta + k0, delta + k0, images, dim, columns,
                       width, dctx + k0, de + k0);
  });
}

}  // namespace attnfast::cpu
