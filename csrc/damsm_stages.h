// The element-wise stages of DAMSM all-pair scoring (DESIGN.md §3.2) between the GEMMs that
// damsm.cpp runs with ATen. Raw float buffers; the CPU versions are declared here, the CUDA
// versions (same arguments plus a stream) in cuda_launch.h.
//
// Words: the words of all sentences sit side by side as the K columns of E (D, K). Sentence i
// owns columns [start[i], start[i] + length[i]); on the CPU they are compact (K = sum of
// cap_lens), on CUDA padded (start[i] = i * T, K = B_s * T) so that nothing waits for the lengths
// on the host. Columns of E outside every sentence are "dead": the stages give them zero
// probability and zero gradient.
// Buffers for a block of `images` images (R regions each):
//   x:        (K, ld) word-major scores E^T V, image j in columns [j*R, (j+1)*R)
//             -> softmax over each sentence's words (P1, Eq. 8), in place; backward: P1 -> dX
//             (in place, or into a second buffer of that layout when P1 is kept)
//   a, da:    (images, K, R) softmax over regions of gamma1 * P1 (Eq. 9), and its gradient
//   ctx, dctx:(images, D, K) region context per word, and its gradient
//   cos, c_norm: (images, K);   scores, dscores: (images, S), rows of the (B_img, B_sent) matrix
#pragma once

#include <cstdint>

namespace attnfast {

struct Segments {
  const int64_t* start;           // (S,) first column of sentence i
  const int64_t* length;          // (S,) cap_lens[i], 1 <= length <= T
  const int64_t* column_segment;  // (K,) sentence whose columns include k (dead ones too)
  int64_t count;                  // S = B_sent
  int64_t columns;                // K
};

constexpr float kCosineEps = 1e-8f;  // the original cosine_similarity's clamp

namespace cpu {

// Per (image, sentence): x -> P1 = softmax over the sentence's words (in place), and
// a = softmax over regions of gamma1 * P1. Dead words get P1 = 0 and a = 0.
void damsm_softmax(float* x, int64_t ld, float* a, int64_t images, int64_t regions,
                   const Segments& seg, float gamma1);
// The two softmaxes backwards: da (overwritten) -> dP1; p (P1, layout of x) -> dx = dX, the
// gradient of the scores E^T V, in the layout of x. dx may be p (in place).
void damsm_softmax_backward(const float* p, float* dx, int64_t ld, const float* a, float* da,
                            int64_t images, int64_t regions, const Segments& seg, float gamma1);
// cos[j][k] = <ctx[j][:,k], e[:,k]> / max(|ctx[j][:,k]| * e_norm[k], eps); c_norm = |ctx[j][:,k]|.
void damsm_cosine(const float* ctx, const float* e, const float* e_norm, int64_t images,
                  int64_t dim, int64_t columns, float* cos, float* c_norm);
// scores[j][i] = log sum over sentence i's columns of exp(gamma2 * cos[j][k]).
void damsm_segment_lse(const float* cos, int64_t images, const Segments& seg, float gamma2,
                       float* scores);
// Gradient of the scores through the cosines, as three coefficients per (j, k):
//   dctx[:,k] = alpha * e[:,k] - beta * ctx[:,k];   de[:,k] += alpha * ctx[:,k] - delta * e[:,k].
void damsm_cosine_grad(const float* cos, const float* c_norm, const float* e_norm,
                       const float* scores, const float* dscores, int64_t images,
                       const Segments& seg, float gamma2, float* alpha, float* beta, float* delta);
// dctx (images, D, K) from the coefficients; de (D, K) accumulates over the images.
void damsm_context_grad(const float* ctx, const float* e, const float* alpha, const float* beta,
                        const float* delta, int64_t images, int64_t dim, int64_t columns,
                        float* dctx, float* de);

}  // namespace cpu
}  // namespace attnfast
