// Writes a random-weight model directory in the released checkpoint layout (config.json,
// model.safetensors or shards + model.safetensors.index.json), one tensor in memory at a time.
// For tests and benchmarks: speed does not depend on weight values.
#pragma once
#include <cstdint>
#include <string>

#include "core/thread_pool.h"
#include "model/config.h"

namespace dsv2 {

struct RandomModelOptions {
  DType dtype = DType::BF16;
  uint64_t seed = 0;
  uint64_t max_shard_bytes = 8ull << 30;  // the released checkpoints use ~8 GiB shards
};

// Values: linear and router rows uniform with std 1/sqrt(in_features), embedding rows std 1,
// norm weights 1 ± 0.1. The same seed gives the same files whatever the thread count.
void write_random_model(const ModelConfig& cfg, const std::string& dir, const RandomModelOptions& options,
                        ThreadPool& pool);

}  // namespace dsv2
