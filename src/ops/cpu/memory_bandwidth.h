// The memory read ceiling, measured: every thread sums its share of a 1 GiB buffer.
#pragma once
#include "core/thread_pool.h"

namespace dsv2 {

// Bytes per second, best of `repeats` passes (the buffer is written once before timing).
double measure_read_bandwidth(ThreadPool& pool, size_t bytes = size_t(1) << 30, int repeats = 3);

}  // namespace dsv2
