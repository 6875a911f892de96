// The GPU's ceilings, measured in the same run as a benchmark: device-to-device copy bandwidth
// (bytes read + written per second) and the bf16 tensor-core GEMM rate (FLOP/s).
#pragma once
#include <cstddef>

namespace dsv2::cuda {

double measure_copy_bandwidth(size_t bytes = size_t(2) << 30, int repeats = 10);
double measure_bf16_gemm_flops(int n = 8192, int repeats = 10);

}  // namespace dsv2::cuda
