// dsv2 quantize: writes a model directory whose Linear matrices are stored quantized (Q8_0 or Q4_0),
// which load_model maps and uses in place. Each such matrix [rows, cols] becomes two tensors:
//   <name>          I8 (int8) or U8 (q4)  [rows, quant_row_bytes(cols)]  the blocks' values
//   <name>.scales   F16                   [rows, quant_blocks(cols)]     one scale per block
// Every other tensor is copied as stored; config.json gains
// "quantization_config": {"quant_method": "dsv2", "format": "int8" | "q4", "block_size": 32}.
#pragma once
#include <cstdint>
#include <string>

#include "core/thread_pool.h"
#include "model/model.h"

namespace dsv2 {

// m: the model loaded from src_dir (not quantized). Shards of up to max_shard_bytes with an index
// when there is more than one; tokenizer and generation files are copied.
void write_quantized_model(const std::string& src_dir, const LoadedModel& m, DType format, const std::string& out_dir,
                           ThreadPool& pool, uint64_t max_shard_bytes = 8ull << 30);

}  // namespace dsv2
