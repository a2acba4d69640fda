// Sizes and mask of one word-region attention call, shared by the CPU and CUDA kernels.
#pragma once

#include <cstdint>

namespace attnfast {

struct AttentionShape {
  int64_t batch;      // B
  int64_t channels;   // C
  int64_t regions;    // N = H * W
  int64_t words;      // T
  const bool* mask;   // (B, T), true = padding word; nullptr: no mask
  bool attngan_mask;  // pair row b*N+n with mask[(b*N+n) mod B], as the original code does
};

}  // namespace attnfast
