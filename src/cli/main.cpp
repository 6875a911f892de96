// dsv2: the command-line program over the dsv2 library.
#include <cstdio>
#include <exception>
#include <map>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "ops/cpu/ops_cpu.h"

namespace {

const char* kUsage =
    "usage: dsv2 <command> [options]\n"
    "\n"
    "commands:\n"
    "  generate  --model DIR (--prompt TEXT [--chat [--system TEXT] [--chat-template FILE]] | --prompt-ids 5,17,42)\n"
    "            [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--min-p P]\n"
    "            [--repetition-penalty R] [--seed S] [--no-eos-stop] [--print-ids] [--device cpu|cuda]\n"
    "  chat      --model DIR [--system TEXT] [--chat-template FILE] [--context N] [sampling options]\n"
    "  logits    --model DIR --ids 5,17,42 --out FILE [--path prefill|decode]\n"
    "  info      --model DIR | --preset v2|v2-lite|tiny [--cache-dtype bf16|f32]\n"
    "  init      --preset v2|v2-lite|tiny --random --out DIR [--layers N] [--dtype bf16|f16|f32] [--seed S]\n"
    "  bench     --model DIR [--prompt-tokens N] [--gen-tokens M] [--json]\n"
    "  tokenize  --tokenizer PATH [--no-special] [--jsonl] < text      (PATH: model directory or tokenizer.json)\n"
    "  detokenize --tokenizer PATH --ids 1,2,3 [--skip-special]\n"
    "  tokenizer train --vocab-size N --out tokenizer.json [--config-out tokenizer_config.json] FILES...\n"
    "  bench-tokenizer --tokenizer PATH FILE [--threads N] [--repeat R] [--chunk-bytes B] [--json]\n"
    "  template  --model DIR --messages FILE.json [--add-generation-prompt] [--chat-template FILE]\n"
    "  serve     --model DIR [--host H] [--port P] [--api-key K] [--max-running N] [--cache-blocks N]\n"
    "            [--block-size B] [--step-tokens T] [--prefill-chunk C] [--context N] [--served-model-name NAME]\n"
    "  quantize  --model DIR --weights int8|q4 --out DIR2\n"
    "  perplexity --model DIR --text FILE [--context N] [--max-tokens N]\n"
    "  bench-matmul [--rows N] [--cols K] [--tokens T] [--weights bf16|int8|q4] [--activations f32|bf16] [--repeats R] [--json]\n"
    "  bench-attention [--context N] [--heads H] [--kv-lora-rank D] [--rope-dim R] [--layers L] [--repeats R] [--json]\n"
    "            --device cuda: [--batch B] [--block-size S] instead of --layers (bf16 cache by default)\n"
    "\n"
    "common options: --threads N (default: all cores), --cache-dtype f32|bf16 (latent cache; default f32),\n"
    "                --weights bf16|int8|q4|fp8 (generate, chat, logits, bench, serve, perplexity: quantize the Linear\n"
    "                matrices at load; default bf16 = as stored; fp8 with --device cuda only),\n"
    "                --activations f32|bf16 (the same commands, CPU: bf16 rounds the activations of BF16 matrices\n"
    "                to bf16 for the AVX512-BF16 kernels, ~1.5x the prefill speed; default f32 = exact),\n"
    "                --weight-pages huge|mapped (the same commands, CPU: huge reads the weight files into 2 MB\n"
    "                pages for a faster decode, where they fit in 90% of the memory available; mapped\n"
    "                memory-maps them: instant start, shared page cache)\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "help" || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::map<std::string, int (*)(dsv2::Args&)> commands = {
      {"generate", dsv2::cmd_generate},   {"chat", dsv2::cmd_chat},
      {"logits", dsv2::cmd_logits},
      {"info", dsv2::cmd_info},           {"init", dsv2::cmd_init},
      {"bench", dsv2::cmd_bench},         {"template", dsv2::cmd_template},
      {"tokenize", dsv2::cmd_tokenize},   {"detokenize", dsv2::cmd_detokenize},
      {"tokenizer", dsv2::cmd_tokenizer}, {"bench-tokenizer", dsv2::cmd_bench_tokenizer},
      {"serve", dsv2::cmd_serve},         {"quantize", dsv2::cmd_quantize},
      {"perplexity", dsv2::cmd_perplexity}, {"bench-matmul", dsv2::cmd_bench_matmul},
      {"bench-attention", dsv2::cmd_bench_attention}};
  const std::string name = argv[1];
  auto it = commands.find(name);
  if (it == commands.end()) {
    std::fprintf(stderr, "dsv2: unknown command '%s'\n\n%s", name.c_str(), kUsage);
    return 2;
  }
  try {
    dsv2::cpu::cpu_isa();  // a bad DSV2_CPU_ISA is reported here, before any work
    dsv2::Args args("dsv2 " + name, std::vector<std::string>(argv + 2, argv + argc));
    return it->second(args);
  } catch (const dsv2::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "internal error: %s\n", e.what());
    return 3;
  }
}
