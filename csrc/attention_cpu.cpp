// CPU kernels of word-region attention: tasks of (caption b, chunk of regions) run in parallel;
// inside a task, tiles of kTile regions keep the T x kTile scores in L1 and every inner loop runs
// over the kTile regions of the tile, contiguous in memory, so that it vectorises.
#include "attention_cpu.h"

#include <algorithm>
#include <vector>

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "simd.h"

namespace attnfast::cpu {
namespace {

constexpr int64_t kTile = 64;    // regions per tile: a (T x kTile) float block stays in L1
constexpr int64_t kChunk = 256;  // regions per parallel task; also the unit of dwords partials

// dst[r][j] = src[r * ld + j] as float for j < cols, zero-padded to kTile columns.
template <typename scalar_t>
ATTNFAST_SIMD_CLONES
void load_tile(const scalar_t* src, int64_t ld, int64_t rows, int64_t cols, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const scalar_t* in = src + r * ld;
    float* row = dst + r * kTile;
    for (int64_t j = 0; j < cols; ++j) row[j] = static_cast<float>(in[j]);
    for (int64_t j = cols; j < kTile; ++j) row[j] = 0.0f;
  }
}

template <typename scalar_t>
ATTNFAST_SIMD_CLONES
void store_tile(const float* src, int64_t rows, int64_t cols, scalar_t* dst, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) dst[r * ld + j] = static_cast<scalar_t>(src[r * kTile + j]);
  }
}

// keep[t][j] = 1 where region n0+j of caption b may attend to word t, else 0 (also past the
// tile); bias[t][j] = 0 or -inf alike (added to the scores before their maximum).
void fill_keep_tile(const AttentionShape& s, int64_t b, int64_t n0, int64_t cols, float* keep,
                    float* bias) {
  const int64_t T = s.words;
  for (int64_t t = 0; t < T; ++t) {
    const bool word_kept = s.mask == nullptr || s.attngan_mask || !s.mask[b * T + t];
    for (int64_t j = 0; j < kTile; ++j) {
      bool ok = word_kept && j < cols;
      if (ok && s.attngan_mask && s.mask != nullptr) {
        ok = !s.mask[((b * s.regions + n0 + j) % s.batch) * T + t];
      }
      keep[t * kTile + j] = ok ? 1.0f : 0.0f;
      bias[t * kTile + j] = ok ? 0.0f : kNegInf;
    }
  }
}

// fill_keep_tile, skipped when the tile already holds caption b's full tile: without the
// "attngan" mask the tile does not depend on the regions. `filled_for` remembers that caption.
void fill_keep(const AttentionShape& s, int64_t b, int64_t n0, int64_t cols, float* keep,
               float* bias, int64_t& filled_for) {
  const bool reusable = cols == kTile && !(s.attngan_mask && s.mask != nullptr);
  if (reusable && filled_for == b) return;
  fill_keep_tile(s, b, n0, cols, keep, bias);
  filled_for = reusable ? b : -1;
}

// Register blocks of the two small matrix products below: up to 6 rows x 16 regions of
// accumulators (12 of the 16 AVX registers) stay in registers over the whole reduction.
constexpr int kRows = 6;

// out[t][j] = sum_c w[c][t] * x[c][j] for t in [t0, t0 + rows)   (scores from h, dp from dout)
template <int rows>
ATTNFAST_ALWAYS_INLINE void project_rows(const float* x, const float* w, int64_t C, int64_t T,
                                         int64_t t0, float* out) {
  for (int64_t j0 = 0; j0 < kTile; j0 += 16) {
    Vec8 acc[rows][2] = {};
    for (int64_t c = 0; c < C; ++c) {
      const Vec8 x0 = load8(x + c * kTile + j0), x1 = load8(x + c * kTile + j0 + 8);
      for (int u = 0; u < rows; ++u) {
        const float wv = w[c * T + t0 + u];
        acc[u][0] += wv * x0;
        acc[u][1] += wv * x1;
      }
    }
    for (int u = 0; u < rows; ++u) {
      store8(out + (t0 + u) * kTile + j0, acc[u][0]);
      store8(out + (t0 + u) * kTile + j0 + 8, acc[u][1]);
    }
  }
}

ATTNFAST_SIMD_CLONES
void tile_project(const float* x, const float* w, int64_t C, int64_t T, float* out) {
  int64_t t0 = 0;
  for (; t0 + kRows <= T; t0 += kRows) project_rows<kRows>(x, w, C, T, t0, out);
  switch (T - t0) {
    case 5: project_rows<5>(x, w, C, T, t0, out); break;
    case 4: project_rows<4>(x, w, C, T, t0, out); break;
    case 3: project_rows<3>(x, w, C, T, t0, out); break;
    case 2: project_rows<2>(x, w, C, T, t0, out); break;
    case 1: project_rows<1>(x, w, C, T, t0, out); break;
    default: break;
  }
}

// out[c][j] = sum_t w[c][t] * p[t][j] for c in [c0, c0 + rows)
template <int rows>
ATTNFAST_ALWAYS_INLINE void mix_rows(const float* p, const float* w, int64_t T, int64_t c0,
                                     float* out) {
  for (int64_t j0 = 0; j0 < kTile; j0 += 16) {
    Vec8 acc[rows][2] = {};
    for (int64_t t = 0; t < T; ++t) {
      const Vec8 p0 = load8(p + t * kTile + j0), p1 = load8(p + t * kTile + j0 + 8);
      for (int u = 0; u < rows; ++u) {
        const float wv = w[(c0 + u) * T + t];
        acc[u][0] += wv * p0;
        acc[u][1] += wv * p1;
      }
    }
    for (int u = 0; u < rows; ++u) {
      store8(out + (c0 + u) * kTile + j0, acc[u][0]);
      store8(out + (c0 + u) * kTile + j0 + 8, acc[u][1]);
    }
  }
}

ATTNFAST_SIMD_CLONES
void tile_mix(const float* p, const float* w, int64_t C, int64_t T, float* out) {
  int64_t c0 = 0;
  for (; c0 + kRows <= C; c0 += kRows) mix_rows<kRows>(p, w, T, c0, out);
  switch (C - c0) {
    case 5: mix_rows<5>(p, w, T, c0, out); break;
    case 4: mix_rows<4>(p, w, T, c0, out); break;
    case 3: mix_rows<3>(p, w, T, c0, out); break;
    case 2: mix_rows<2>(p, w, T, c0, out); break;
    case 1: mix_rows<1>(p, w, T, c0, out); break;
    default: break;
  }
}

// In place: s[t][j] -> softmax over t of the kept words; a column with no kept word becomes 0.
ATTNFAST_SIMD_CLONES
void tile_softmax(float* s, const float* keep, const float* bias, int64_t T) {
  float peak[kTile], total[kTile];
  for (int64_t j = 0; j < kTile; ++j) { peak[j] = kNegInf; total[j] = 0.0f; }
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < kTile; ++j) {
      peak[j] = std::max(peak[j], s[t * kTile + j] + bias[t * kTile + j]);
    }
  }
  for (int64_t j = 0; j < kTile; ++j) peak[j] = peak[j] == kNegInf ? 0.0f : peak[j];
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < kTile; ++j) {
      const float e = keep[t * kTile + j] * fast_exp(s[t * kTile + j] - peak[j]);
      s[t * kTile + j] = e;
      total[j] += e;
    }
  }
  for (int64_t j = 0; j < kTile; ++j) total[j] = total[j] > 0.0f ? 1.0f / total[j] : 0.0f;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < kTile; ++j) s[t * kTile + j] *= total[j];
  }
}

// In place: dp[t][j] -> ds[t][j] = p[t][j] * (dp[t][j] - sum_t' p[t'][j] dp[t'][j]).
ATTNFAST_SIMD_CLONES
void tile_softmax_backward(const float* p, float* dp, int64_t T) {
  float dot[kTile] = {};
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < kTile; ++j) dot[j] += p[t * kTile + j] * dp[t * kTile + j];
  }
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < kTile; ++j) {
      dp[t * kTile + j] = p[t * kTile + j] * (dp[t * kTile + j] - dot[j]);
    }
  }
}

// part[c][t] += sum_j g[c][j] p[t][j] + h[c][j] ds[t][j]   (dwords of one tile)
ATTNFAST_SIMD_CLONES
void tile_dwords(const float* g, const float* p, const float* h, const float* ds, int64_t C,
                 int64_t T, float* part) {
  for (int64_t c = 0; c < C; ++c) {
    const float* gr = g + c * kTile;
    const float* hr = h + c * kTile;
    for (int64_t t = 0; t < T; ++t) {
      const float* pr = p + t * kTile;
      const float* sr = ds + t * kTile;
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int64_t j = 0; j < kTile; ++j) acc += gr[j] * pr[j] + hr[j] * sr[j];
      part[c * T + t] += acc;
    }
  }
}

int64_t num_chunks(const AttentionShape& s) { return (s.regions + kChunk - 1) / kChunk; }

}  // namespace

template <typename scalar_t>
void attention_forward(const AttentionShape& s, const scalar_t* h, const float* w, scalar_t* out,
                       scalar_t* attn) {
  const int64_t C = s.channels, N = s.regions, T = s.words, chunks = num_chunks(s);
  at::parallel_for(0, s.batch * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> ht(C * kTile), p(T * kTile), keep(T * kTile), bias(T * kTile),
        ot(C * kTile);
    int64_t filled_for = -1;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / chunks;
      const int64_t stop = std::min(N, (task % chunks + 1) * kChunk);
      const float* wb = w + b * C * T;
      for (int64_t n0 = (task % chunks) * kChunk; n0 < stop; n0 += kTile) {
        const int64_t cols = std::min(kTile, stop - n0);
        load_tile(h + b * C * N + n0, N, C, cols, ht.data());
        fill_keep(s, b, n0, cols, keep.data(), bias.data(), filled_for);
        tile_project(ht.data(), wb, C, T, p.data());
        tile_softmax(p.data(), keep.data(), bias.data(), T);
        if (attn != nullptr) store_tile(p.data(), T, cols, attn + b * T * N + n0, N);
        tile_mix(p.data(), wb, C, T, ot.data());
        store_tile(ot.data(), C, cols, out + b * C * N + n0, N);
      }
    }
  });
}

template <typename scalar_t>
void attention_backward(const AttentionShape& s, const scalar_t* h, const float* w,
                        const scalar_t* dout, const scalar_t* dattn, scalar_t* dh, float* dwords) {
  const int64_t C = s.channels, N = s.regions, T = s.words, chunks = num_chunks(s);
  // One dwords partial per task, summed in a fixed order below: the result does not depend on
  // the number of threads.
  std::vector<float> partials(s.batch * chunks * C * T, 0.0f);
  at::parallel_for(0, s.batch * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> ht(C * kTile), gt(C * kTile), p(T * kTile), ds(T * kTile),
        keep(T * kTile), bias(T * kTile), da(T * kTile), ot(C * kTile);
    int64_t filled_for = -1;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / chunks;
      const int64_t stop = std::min(N, (task % chunks + 1) * kChunk);
      const float* wb = w + b * C * T;
      float* part = partials.data() + task * C * T;
      for (int64_t n0 = (task % chunks) * kChunk; n0 < stop; n0 += kTile) {
        const int64_t cols = std::min(kTile, stop - n0);
        load_tile(h + b * C * N + n0, N, C, cols, ht.data());
        load_tile(dout + b * C * N + n0, N, C, cols, gt.data());
        fill_keep(s, b, n0, cols, keep.data(), bias.data(), filled_for);
        tile_project(ht.data(), wb, C, T, p.data());
        tile_softmax(p.data(), keep.data(), bias.data(), T);
        tile_project(gt.data(), wb, C, T, ds.data());  // dp from out
        if (dattn != nullptr) {
          load_tile(dattn + b * T * N + n0, N, T, cols, da.data());
          for (int64_t i = 0; i < T * kTile; ++i) ds[i] += da[i];
        }
        tile_softmax_backward(p.data(), ds.data(), T);
        tile_mix(ds.data(), wb, C, T, ot.data());
        store_tile(ot.data(), C, cols, dh + b * C * N + n0, N);
        tile_dwords(gt.data(), p.data(), ht.data(), ds.data(), C, T, part);
      }
    }
  });
  at::parallel_for(0, s.batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      float* dst = dwords + b * C * T;
      std::fill(dst, dst + C * T, 0.0f);
      for (int64_t q = 0; q < chunks; ++q) {
        const float* part = partials.data() + (b * chunks + q) * C * T;
        for (int64_t i = 0; i < C * T; ++i) dst[i] += part[i];
      }
    }
  });
}

#define ATTNFAST_INSTANTIATE(scalar_t)                                                            \
  template void attention_forward<scalar_t>(const AttentionShape&, const scalar_t*, const float*, \
                                            scalar_t*, scalar_t*);                                \
  template void attention_backward<scalar_t>(const AttentionShape&, const scalar_t*,              \
                                             const float*, const scalar_t*, const scalar_t*,      \
                                             scalar_t*, float*);
ATTNFAST_INSTANTIATE(float)
ATTNFAST_INSTANTIATE(c10::BFloat16)
ATTNFAST_INSTANTIATE(c10::Half)
#undef ATTNFAST_INSTANTIATE

}  // namespace attnfast::cpu
