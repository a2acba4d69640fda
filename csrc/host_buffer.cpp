// See host_buffer.h.
#include "host_buffer.h"

#include <mutex>

#include <ATen/ATen.h>
#include <c10/core/impl/alloc_cpu.h>

namespace attnfast::cpu {
namespace {

struct Block {
  void* data = nullptr;
  size_t bytes = 0;
};

class SpareBlock {
 public:
  // The spare block if it holds `bytes`, else a new one (the spare, too small, is freed).
  Block take(size_t bytes) {
    Block block, stale;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (spare_.data != nullptr && spare_.bytes >= bytes) {
        block = spare_;
      } else {
        stale = spare_;
      }
      spare_ = Block{};
    }
    if (stale.data != nullptr) c10::free_cpu(stale.data);
    if (block.data == nullptr) block = Block{c10::alloc_cpu(bytes), bytes};
    return block;
  }

  // Keeps `block` as the spare; the previous spare, if any, is freed.
  void give(Block block) {
    Block stale;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stale = spare_;
      spare_ = block;
    }
    if (stale.data != nullptr) c10::free_cpu(stale.data);
  }

 private:
  std::mutex mutex_;
  Block spare_;
};

// Never destroyed: tensors may be freed during interpreter shutdown, after static destructors.
SpareBlock& spare() {
  static SpareBlock* instance = new SpareBlock();
  return *instance;
}

}  // namespace

at::Tensor reusable_float_buffer(int64_t numel) {
  TORCH_CHECK(numel >= 0, "reusable_float_buffer: numel must be >= 0, got ", numel);
  const Block block = spare().take(static_cast<size_t>(numel) * sizeof(float));
  return at::from_blob(
      block.data, {numel}, [block](void*) { spare().give(block); },
      at::TensorOptions().dtype(at::kFloat).device(at::kCPU));
}

}  // namespace attnfast::cpu
