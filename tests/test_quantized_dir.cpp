// dsv2 quantize directories: written from the golden fixtures, loaded in place (the matrices point
// into the mapped files), giving the logits of quantizing at load bit for bit; every malformed
// directory is a clear error; the CLI round trip (quantize, info, logits).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/deepseek_v2.h"
#include "model/quantize.h"
#include "model/quantized_checkpoint.h"
#include "test_util.h"

namespace dsv2 {
namespace {

using test::error_of;
using test::expect_contains;

std::string quantized_copy(const std::string& fixture, DType format, uint64_t max_shard_bytes = 8ull << 30) {
  const std::string src = test::load_golden(fixture).dir, out = test::temp_dir("qdir") + "/model";
  ThreadPool pool(2);
  write_quantized_model(src, load_model(src), format, out, pool, max_shard_bytes);
  return out;
}

std::vector<float> prefill_logits(const LoadedModel& m, const std::vector<int32_t>& ids) {
  ThreadPool pool(2);
  DeepseekV2 net(m.config, m.weights, pool);
  LatentCache cache = net.make_cache(int64_t(ids.size()), DType::F32);
  std::vector<float> logits;
  net.forward(ids, cache, AttentionPath::Decompressed, LogitsRows::All, logits);
  return logits;
}

bool points_into(const void* p, const TensorRef& t) {
  const auto* b = static_cast<const std::byte*>(p);
  return b >= t.data && b < t.data + t.n_bytes;
}

TEST(QuantizedDir, LoadsInPlaceWithTheLogitsOfQuantizingAtLoad) {
  for (const std::string fixture : {"lite_like", "v2_like"}) {
    for (DType format : {DType::Q8_0, DType::Q4_0}) {
      for (uint64_t shard : {8ull << 30, 20000ull}) {  // one file; many small shards with an index
        SCOPED_TRACE(fixture + " " + dtype_name(format) + " shard " + std::to_string(shard));
        const test::Golden g = test::load_golden(fixture);
        const std::string dir = quantized_copy(fixture, format, shard);
        EXPECT_EQ(std::filesystem::exists(dir + "/model.safetensors.index.json"), shard < 1000000);
        LoadedModel stored = load_model(dir);
        EXPECT_TRUE(stored.quantized_storage.empty());
        for (auto& [name, W] : linear_matrices(stored.config, stored.weights)) {
          EXPECT_EQ(W->dtype, format) << name;
          EXPECT_TRUE(points_into(W->data, *stored.checkpoint->find(name))) << name;
          EXPECT_TRUE(points_into(W->scales, *stored.checkpoint->find(name + ".scales"))) << name;
        }
        LoadedModel at_load = load_model(g.dir);
        ThreadPool pool(2);
        quantize_model(at_load, format == DType::Q8_0 ? WeightFormat::Int8 : WeightFormat::Q4, pool);
        EXPECT_EQ(prefill_logits(stored, g.ids), prefill_logits(at_load, g.ids));
        // A stored format loads as stored (bf16) or as itself; another one is refused.
        quantize_model(stored, format == DType::Q8_0 ? WeightFormat::Int8 : WeightFormat::Q4, pool);
        expect_contains(error_of([&] { quantize_model(stored, format == DType::Q8_0 ? WeightFormat::Q4 : WeightFormat::Int8, pool); }),
                        "already quantized");
      }
    }
  }
}

// Rewrites dir's model.safetensors after `edit` changed its tensor list (entries and their bytes).
struct Tensor {
  SafetensorsWriter::Entry entry;
  std::vector<std::byte> bytes;
};
void rewrite(const std::string& dir, const std::function<void(std::vector<Tensor>&)>& edit) {
  std::vector<Tensor> tensors;
  {
    Checkpoint ckpt(dir);
    for (const auto& [name, t] : ckpt.tensors()) {
      const DType dt = t->dtype_name == "I8" ? DType::Q8_0 : t->dtype_name == "U8" ? DType::Q4_0 : t->dtype();
      tensors.push_back({{name, dt, t->shape}, std::vector<std::byte>(t->data, t->data + t->n_bytes)});
    }
  }
  edit(tensors);
  std::vector<SafetensorsWriter::Entry> entries;
  for (const Tensor& t : tensors) entries.push_back(t.entry);
  SafetensorsWriter w(dir + "/model.safetensors", entries);
  for (const Tensor& t : tensors) w.write_next(t.bytes.data(), t.bytes.size());
  w.finish();
}

Tensor& find(std::vector<Tensor>& ts, const std::string& name) {
  for (Tensor& t : ts)
    if (t.entry.name == name) return t;
  throw Error("test: no tensor " + name);
}

const std::string kMatrix = "model.layers.0.self_attn.kv_b_proj.weight";  // [3 * (16 + 16), 24]: one padded block a row

TEST(QuantizedDir, MalformedDirectoriesAreClearErrors) {
  auto broken = [&](DType format, const std::function<void(std::vector<Tensor>&)>& edit) {
    const std::string dir = quantized_copy("lite_like", format);
    rewrite(dir, edit);
    return error_of([&] { load_model(dir); });
  };
  std::string e = broken(DType::Q8_0, [](std::vector<Tensor>& ts) {
    std::erase_if(ts, [](const Tensor& t) { return t.entry.name == kMatrix + ".scales"; });
  });
  expect_contains(e, "missing tensor '" + kMatrix + ".scales' (F16 [96, 1])");
  e = broken(DType::Q8_0, [](std::vector<Tensor>& ts) {
    Tensor& s = find(ts, kMatrix + ".scales");
    s.entry.dtype = DType::BF16;  // same size, wrong dtype
  });
  expect_contains(e, "tensor '" + kMatrix + ".scales' has dtype BF16, expected F16");
  e = broken(DType::Q4_0, [](std::vector<Tensor>& ts) { find(ts, kMatrix + ".scales").entry.shape = {48, 2}; });
  expect_contains(e, "tensor '" + kMatrix + ".scales' has shape [48, 2], expected [96, 1]");
  e = broken(DType::Q8_0, [](std::vector<Tensor>& ts) { find(ts, kMatrix).entry.dtype = DType::Q4_0; });
  expect_contains(e, "tensor '" + kMatrix + "' has dtype U8, expected I8 (int8 of logical shape [96, 24])");
  e = broken(DType::Q4_0, [](std::vector<Tensor>& ts) { find(ts, kMatrix).entry.shape = {96 * 16}; });
  expect_contains(e, "tensor '" + kMatrix + "' has shape [1536], expected [96, 16] (q4 of logical shape [96, 24])");
  e = broken(DType::Q8_0, [](std::vector<Tensor>& ts) {
    std::erase_if(ts, [](const Tensor& t) { return t.entry.name == kMatrix; });
  });
  expect_contains(e, "missing tensor '" + kMatrix + "'");

  // config.json's quantization_config.
  auto bad_config = [&](const std::function<void(nlohmann::json&)>& edit) {
    const std::string dir = quantized_copy("lite_like", DType::Q8_0);
    nlohmann::json c = nlohmann::json::parse(test::read_file(dir + "/config.json"));
    edit(c["quantization_config"]);
    test::write_file(dir + "/config.json", c.dump());
    return error_of([&] { load_model(dir); });
  };
  expect_contains(bad_config([](nlohmann::json& q) { q["format"] = "q3"; }), "quantization_config: field 'format' must be int8 or q4");
  expect_contains(bad_config([](nlohmann::json& q) { q["block_size"] = 64; }), "field 'block_size' must be 32");
  expect_contains(bad_config([](nlohmann::json& q) { q["quant_method"] = "gptq"; }), "field 'quant_method' must be \"dsv2\"");
  expect_contains(bad_config([](nlohmann::json& q) { q = "int8"; }), "field 'quantization_config' must be an object");
  // A quantized config over unquantized tensors.
  expect_contains(bad_config([](nlohmann::json& q) { q["format"] = "q4"; }), "has dtype I8, expected U8");
}

TEST(QuantizedDir, CommandLineRoundTrip) {
  const std::string src = test::load_golden("v2_like").dir, out = test::temp_dir("qcli") + "/m";
  test::RunResult r = test::run_dsv2("quantize --model " + src + " --weights q4 --out " + out + " --threads 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run_dsv2("info --model " + out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["linear_weights"], "q4");
  const std::string ids = "1,5,17,42,7,99", a = out + "/a.f32", b = out + "/b.f32";
  ASSERT_EQ(test::run_dsv2("logits --model " + out + " --ids " + ids + " --out " + a).exit_code, 0);
  ASSERT_EQ(test::run_dsv2("logits --model " + src + " --weights q4 --ids " + ids + " --out " + b).exit_code, 0);
  EXPECT_EQ(test::read_f32_file(a), test::read_f32_file(b));

  r = test::run_dsv2("logits --model " + out + " --weights int8 --ids 1 --out " + a);
  EXPECT_EQ(r.exit_code, 1);
  expect_contains(r.err, "already quantized to q4");
  r = test::run_dsv2("quantize --model " + out + " --weights int8 --out " + out + "2");
  EXPECT_EQ(r.exit_code, 1);
  expect_contains(r.err, "already quantized (q4)");
  r = test::run_dsv2("quantize --model " + src + " --weights bf16 --out " + out + "3");
  EXPECT_EQ(r.exit_code, 1);
  expect_contains(r.err, "--weights must be int8 or q4");
  r = test::run_dsv2("quantize --model " + src + " --weights int8 --out " + out);
  EXPECT_EQ(r.exit_code, 1);
  expect_contains(r.err, "not an empty directory");
  r = test::run_dsv2("generate --model " + src + " --weights q8 --prompt-ids 1,2");
  EXPECT_EQ(r.exit_code, 1);
  expect_contains(r.err, "--weights must be bf16, int8, q4 or fp8 (seen 'q8')");
  // FP8 is the GPU's format: on the CPU, and for a quantized directory, a clear error.
  for (const std::string& cmd : {"generate --model " + src + " --weights fp8 --prompt-ids 1,2",
                                "logits --model " + src + " --weights fp8 --ids 1,2 --out " + a,
                                "bench --model " + src + " --weights fp8 --prompt-tokens 4 --gen-tokens 2"}) {
    r = test::run_dsv2(cmd);
    EXPECT_EQ(r.exit_code, 1) << cmd;
    expect_contains(r.err, "--weights fp8 is a GPU format (--device cuda)");
  }
  r = test::run_dsv2("quantize --model " + src + " --weights fp8 --out " + out + "4");
  EXPECT_EQ(r.exit_code, 1);
  expect_contains(r.err, "--weights must be int8 or q4 (fp8 is quantized at upload by --device cuda)");
}

TEST(QuantizedDir, PerplexityOfADirectoryEqualsQuantizingAtLoad) {
  const std::string src = std::string(DSV2_SOURCE_DIR) + "/models/default", out = test::temp_dir("qppl") + "/m";
  const std::string text = std::string(DSV2_TEST_DATA_DIR) + "/brown_tail.txt";
  ASSERT_EQ(test::run_dsv2("quantize --model " + src + " --weights q4 --out " + out).exit_code, 0);
  test::RunResult r = test::run_dsv2("perplexity --model " + out + " --text " + text + " --max-tokens 40 --context 16");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json from_dir = nlohmann::json::parse(r.out);
  r = test::run_dsv2("perplexity --model " + src + " --weights q4 --text " + text + " --max-tokens 40 --context 16");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json at_load = nlohmann::json::parse(r.out);
  EXPECT_EQ(from_dir["windows"], 3);
  EXPECT_EQ(from_dir["tokens_scored"], 37);  // windows of 16, 16 and 8 tokens: 15 + 15 + 7
  EXPECT_EQ(from_dir["perplexity"], at_load["perplexity"]);
  EXPECT_GT(from_dir["perplexity"].get<double>(), 1.0);
  EXPECT_EQ(test::read_file(out + "/tokenizer.json"), test::read_file(src + "/tokenizer.json"));
}

TEST(QuantizedDir, BenchCountsTheBytesOfEachFormat) {
  // The default model's decode bytes counted by hand from its config.json (H 256, 4 heads, 4 layers, 1 dense
  // of I 768, 3 MoE of 8 experts of I 192 with top-2 and 1 shared, vocab 4000): every Linear matrix of
  // [rows, cols] is rows · ceil(cols / 32) blocks of 34 (int8) or 18 (q4) bytes; the embedding row and the
  // routers stay BF16, the norms are f32.
  const std::string src = std::string(DSV2_SOURCE_DIR) + "/models/default", out = test::temp_dir("qbench") + "/m";
  auto bytes = [](const std::string& args) {
    test::RunResult r = test::run_dsv2("bench " + args + " --prompt-tokens 4 --gen-tokens 2 --threads 2 --json");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out)["decode_weight_bytes_per_token"].get<double>();
  };
  EXPECT_EQ(bytes("--model " + src), 6855168.0);
  EXPECT_EQ(bytes("--model " + src + " --weights int8"), 3652608.0);
  EXPECT_EQ(bytes("--model " + src + " --weights q4"), 1944576.0);
  ASSERT_EQ(test::run_dsv2("quantize --model " + src + " --weights int8 --out " + out).exit_code, 0);
  EXPECT_EQ(bytes("--model " + out), 3652608.0);
}

}  // namespace
}  // namespace dsv2
