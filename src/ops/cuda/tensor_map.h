// Tensor maps (the descriptors Hopper's tensor copies read) over row-major matrices of 2-byte values,
// built on the host for a kernel's __grid_constant__ parameter.
#pragma once
#include <cuda.h>

#include <cstdint>

namespace dsv2::cuda {

// Values a box's row holds: one 128-byte row of a swizzled tile.
constexpr int kSwizzledBoxValues = 64;

// A 2-D map over `rows` rows of `cols` 2-byte values (bf16 or f16; cols % 8 == 0, data 16-byte aligned),
// read in boxes of kSwizzledBoxValues values × box_rows rows into the 128-byte swizzle layout
// (warpgroup_mma.cuh's swizzled tiles); reads past either end give zeros.
CUtensorMap swizzled_row_tiles(const void* data, int64_t rows, int64_t cols, int box_rows, bool bf16);

}  // namespace dsv2::cuda
