// The Python module attnfast._C: the entry points of ops.h and WITH_CUDA.
#include <torch/extension.h>

#include "launch_config.h"
#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "attnfast C++/CUDA kernels: word-region attention and DAMSM scores (see csrc/ops.h)";
#ifdef ATTNFAST_WITH_CUDA
  m.attr("WITH_CUDA") = true;
#else
  m.attr("WITH_CUDA") = false;
#endif
  namespace py = pybind11;
  m.def("attention_forward", &attnfast::attention_forward, py::arg("h"), py::arg("words"),
        py::arg("mask"), py::arg("attngan_mask"), py::arg("return_attn"),
        "word-region attention -> (out, attn or None)");
  m.def("attention_backward", &attnfast::attention_backward, py::arg("h"), py::arg("words"),
        py::arg("mask"), py::arg("attngan_mask"), py::arg("dout"), py::arg("dattn"),
        "-> (dh, dwords)");
  m.def("damsm_forward", &attnfast::damsm_forward, py::arg("regions"), py::arg("words"),
        py::arg("cap_lens"), py::arg("gamma1"), py::arg("gamma2"), py::arg("return_attn"),
        py::arg("padded") = py::none(), py::arg("save") = false,
        "DAMSM all-pair scores -> (scores, attn or None, saved or None)");
  m.def("damsm_backward", &attnfast::damsm_backward, py::arg("regions"), py::arg("words"),
        py::arg("cap_lens"), py::arg("gamma1"), py::arg("gamma2"), py::arg("dscores"),
        py::arg("padded") = py::none(), py::arg("saved") = py::none(),
        "-> (dregions, dwords); saved: damsm_forward's, else recomputed");
  m.def("glu_rows_forward", &attnfast::glu_rows_forward, py::arg("x"),
        "GLU along the last dim of a contiguous CPU (P, 2H) matrix -> (P, H)");
  m.def("glu_rows_backward", &attnfast::glu_rows_backward, py::arg("grad"), py::arg("x"),
        "-> dx (P, 2H) from dout (P, H)");
  m.def(
      "cuda_launch_config",
      [](const std::string& kernel, int64_t words) -> std::pair<int, int64_t> {
        if (kernel == "attention_forward_kernel") {
          return {attnfast::cuda::attention_block_threads(words, 1),
                  attnfast::cuda::attention_shared_bytes(words, 1)};
        }
        if (kernel == "attention_backward_kernel") {
          return {attnfast::cuda::attention_block_threads(words, 2),
                  attnfast::cuda::attention_shared_bytes(words, 2)};
        }
        return {attnfast::cuda::kDamsmThreads, 0};  // every DAMSM stage kernel
      },
      py::arg("kernel"), py::arg("words"),
      "(threads per block, dynamic shared bytes) of a CUDA kernel of this module for T = words "
      "(same on CPU-only builds: the kernel resource report reads it)");
}
