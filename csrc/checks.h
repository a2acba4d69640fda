// Argument checks shared by the torch-facing glue; errors name the argument.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace attnfast {

// A float32/bfloat16/float16 tensor of rank `ndim`, non-empty, on the CPU or (in a CUDA build)
// on a CUDA device.
inline void check_features(const char* name, const at::Tensor& t, int64_t ndim,
                           const char* expected) {
  TORCH_CHECK(t.defined(), name, " must be a tensor of shape ", expected);
  TORCH_CHECK(t.dim() == ndim, name, " must have shape ", expected, ", got ", t.sizes());
  const auto type = t.scalar_type();
  TORCH_CHECK(type == at::kFloat || type == at::kBFloat16 || type == at::kHalf, name,
              " must be float32, bfloat16 or float16, got ", type);
  TORCH_CHECK(t.numel() > 0, name, " must not be empty, got shape ", t.sizes());
#ifdef ATTNFAST_WITH_CUDA
  TORCH_CHECK(t.is_cpu() || t.is_cuda(), name, " must be on the CPU or a CUDA device, got ",
              t.device());
#else
  TORCH_CHECK(t.is_cpu(), name, " is on ", t.device(),
              " but attnfast._C was built without CUDA (CPU tensors only)");
#endif
}

inline void check_same(const char* name, const at::Tensor& t, const char* ref_name,
                       const at::Tensor& ref) {
  TORCH_CHECK(t.device() == ref.device(), name, " is on ", t.device(), " but ", ref_name, " is on ",
              ref.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), name, " has dtype ", t.scalar_type(), " but ",
              ref_name, " has ", ref.scalar_type());
}

}  // namespace attnfast

#ifdef ATTNFAST_WITH_CUDA
#include <cuda_runtime.h>

namespace attnfast {
inline void check_cuda(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "attnfast._C: ", what, " failed: ", cudaGetErrorString(err));
}
}  // namespace attnfast
#endif
