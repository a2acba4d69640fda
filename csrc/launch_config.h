// Launch configurations of the CUDA kernels (threads per block, dynamic shared memory), plain C++
// with no CUDA types: the .cu launchers use them, and so does the binding `cuda_launch_config`
// (bindings.cpp) through which the kernel resource report (bench/kernel_resources.py) computes
// the kernels' occupancy, on machines without CUDA too.
#pragma once

#include <cstdint>

namespace attnfast::cuda {

// DAMSM stage kernels (damsm.cu): threads per block, no dynamic shared memory.
constexpr int kDamsmThreads = 256;

// Attention kernels (attention.cu): each thread keeps `columns` float columns of T words in
// shared memory (1 forward: probabilities; 2 backward: probabilities and their gradients).
// Threads per block: 128 where the shared columns fit in 48 KiB, fewer (down to 32) for long T.
inline int attention_block_threads(int64_t words, int columns) {
  int threads = 128;
  while (threads > 32 && static_cast<int64_t>(threads) * words * columns * 4 > 48 * 1024) {
    threads /= 2;
  }
  return threads;
}

inline int64_t attention_shared_bytes(int64_t words, int columns) {
  return static_cast<int64_t>(attention_block_threads(words, columns)) * words * columns *
         static_cast<int64_t>(sizeof(float));
}

}  // namespace attnfast::cuda
