// One reusable host buffer for the DAMSM forward's saved intermediates (damsm.cpp): a training
// loop asks for a buffer of the same size every step, and freshly allocated memory of that size
// (~138 MB at B = 48) comes from the OS as zero pages that fault in one by one, which cost the
// forward as much time as its softmaxes.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace attnfast::cpu {

// An uninitialised contiguous float32 CPU tensor of `numel` elements. When the last tensor using
// its memory is freed, that memory is kept (one block at most: the latest freed) and handed to the
// next call that fits in it, instead of going back to the OS. So at most one block, of the size
// of the largest buffer asked for recently, stays allocated between steps.
at::Tensor reusable_float_buffer(int64_t numel);

}  // namespace attnfast::cpu
