// The subcommands of the dsv2 program; each parses its options and calls the library.
// Each returns the process exit code; bad input throws dsv2::Error (exit code 1).
#pragma once
#include <string>
#include <vector>

#include "cli/args.h"
#include "core/dtype.h"
#include "engine/generator.h"
#include "model/quantize.h"

namespace dsv2 {

int cmd_logits(Args& args);
int cmd_generate(Args& args);
int cmd_chat(Args& args);
int cmd_info(Args& args);
int cmd_init(Args& args);
int cmd_bench(Args& args);
int cmd_template(Args& args);
int bench_cuda(Args& args);  // dsv2 bench --device cuda (cmd_bench_cuda.cpp, CUDA builds only)
int bench_attention_cuda(Args& args);  // dsv2 bench-attention --device cuda (CUDA builds only)
int cmd_tokenize(Args& args);
int cmd_detokenize(Args& args);
int cmd_tokenizer(Args& args);
int cmd_bench_tokenizer(Args& args);
int cmd_serve(Args& args);
int cmd_quantize(Args& args);
int cmd_perplexity(Args& args);
int cmd_bench_matmul(Args& args);
int cmd_bench_attention(Args& args);

// Options shared by several commands.
// --max-new-tokens, --temperature, --top-k, --top-p, --min-p, --repetition-penalty, --seed, --no-eos-stop;
// `fallback` gives the values of options not given.
GenerationOptions generation_options(Args& args, const GenerationOptions& fallback);
int threads_option(Args& args);                          // --threads N (default: all cores)
DType cache_dtype_option(Args& args, DType fallback);    // --cache-dtype f32|bf16
WeightFormat weights_option(Args& args);                 // --weights bf16|int8|q4|fp8 (default bf16: as stored)
ActivationFormat activations_option(Args& args);         // --activations f32|bf16 (default f32)

}  // namespace dsv2
