// The loader on good and broken files: every problem is an Error naming the file and tensor.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/model.h"
#include "model/random_model.h"
#include "model/safetensors.h"
#include "test_util.h"

namespace dsv2 {
namespace {

using nlohmann::json;

// A safetensors file from a header object and a data section.
std::string safetensors_bytes(const json& header, const std::string& data) {
  std::string h = header.dump();
  uint64_t n = h.size();
  return std::string(reinterpret_cast<const char*>(&n), 8) + h + data;
}

using test::error_of;
using test::expect_contains;

std::string file_with(const json& header, const std::string& data) {
  std::string path = test::temp_dir("st") + "/model.safetensors";
  test::write_file(path, safetensors_bytes(header, data));
  return path;
}

TEST(Safetensors, ReadsWhatTheWriterWrote) {
  std::string path = test::temp_dir("st") + "/a.safetensors";
  SafetensorsWriter w(path, {{"x", DType::F32, {2, 3}}, {"y", DType::BF16, {4}}, {"z", DType::F16, {1}}});
  float x[6] = {1, 2, 3, 4, 5, 6};
  uint16_t y[4] = {0x3f80, 0x4000, 0x4040, 0x4080}, z[1] = {0x3c00};
  w.write_next(x, sizeof x);
  w.write_next(y, sizeof y);
  w.write_next(z, sizeof z);
  w.finish();
  SafetensorsFile f(path);
  ASSERT_EQ(f.tensors().size(), 3u);
  const TensorRef& tx = f.tensors().at("x");
  EXPECT_EQ(tx.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(tx.dtype(), DType::F32);
  EXPECT_EQ(static_cast<const float*>(static_cast<const void*>(tx.data))[5], 6.0f);
  EXPECT_EQ(f.tensors().at("y").dtype(), DType::BF16);
  EXPECT_EQ(f.tensors().at("z").n_bytes, 2u);
}

// A file held in huge pages has the mapped file's bytes (a size that is not a whole number of pages, one
// byte, none), its start 2 MB aligned; broken files fail the same way either way.
TEST(MappedFile, HugePagesHoldTheMappedBytes) {
  std::mt19937 rng(3);
  for (size_t n : {size_t(3 << 20) + 17, size_t(1), size_t(0)}) {
    std::string bytes(n, '\0');
    for (char& c : bytes) c = char(rng());
    const std::string path = test::temp_dir("mf") + "/f.bin";
    test::write_file(path, bytes);
    const MappedFile mapped(path), huge(path, FileResidency::HugePages);
    ASSERT_EQ(huge.size(), n);
    ASSERT_EQ(mapped.size(), n);
    if (n == 0) continue;
    EXPECT_EQ(std::memcmp(huge.data(), mapped.data(), n), 0);
    EXPECT_EQ(std::memcmp(huge.data(), bytes.data(), n), 0);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(huge.data()) % (2 << 20), 0u);
  }
  const std::string missing = test::temp_dir("mf") + "/missing.bin";
  expect_contains(error_of([&] { MappedFile f(missing, FileResidency::HugePages); }), "missing.bin: cannot open");
  expect_contains(error_of([&] { MappedFile f(test::temp_dir("mf"), FileResidency::HugePages); }), "not a regular file");
  // A model directory loads the same tensors either way.
  const std::string path = test::temp_dir("st") + "/h.safetensors";
  SafetensorsWriter w(path, {{"x", DType::F32, {2, 3}}});
  const float x[6] = {1, 2, 3, 4, 5, 6};
  w.write_next(x, sizeof x);
  w.finish();
  const SafetensorsFile f(path, FileResidency::HugePages);
  EXPECT_EQ(std::memcmp(f.tensors().at("x").data, x, sizeof x), 0);
}

// Huge pages where the files fit in the memory available; a model larger than memory stays mapped.
TEST(MappedFile, HugePagesOnlyWhereTheyFit) {
  EXPECT_EQ(residency_that_fits(4096, FileResidency::HugePages), FileResidency::HugePages);
  EXPECT_EQ(residency_that_fits(size_t(1) << 50, FileResidency::HugePages), FileResidency::Mapped);  // 1 PiB
  EXPECT_EQ(residency_that_fits(4096, FileResidency::Mapped), FileResidency::Mapped);
  const test::Golden g = test::load_golden("lite_like");
  EXPECT_EQ(load_model(g.dir, FileResidency::HugePages).checkpoint->residency(), FileResidency::HugePages);
  EXPECT_EQ(load_model(g.dir).checkpoint->residency(), FileResidency::Mapped);
}

TEST(Safetensors, RejectsBrokenFiles) {
  const std::string data(16, '\0');
  json ok = {{"t", {{"dtype", "F32"}, {"shape", {2, 2}}, {"data_offsets", {0, 16}}}}};
  EXPECT_EQ(error_of([&] { SafetensorsFile f(file_with(ok, data)); }), "(no error)");

  std::string tiny = test::temp_dir("st") + "/short.safetensors";
  test::write_file(tiny, "abc");
  expect_contains(error_of([&] { SafetensorsFile f(tiny); }), "truncated");

  std::string past = test::temp_dir("st") + "/past.safetensors";
  uint64_t huge = 1000;
  test::write_file(past, std::string(reinterpret_cast<const char*>(&huge), 8) + "{}");
  std::string e = error_of([&] { SafetensorsFile f(past); });
  expect_contains(e, "header length 1000 runs past the end");
  expect_contains(e, "past.safetensors");

  std::string bad_json = test::temp_dir("st") + "/badjson.safetensors";
  uint64_t n = 5;
  test::write_file(bad_json, std::string(reinterpret_cast<const char*>(&n), 8) + "{\"a\":");
  expect_contains(error_of([&] { SafetensorsFile f(bad_json); }), "invalid JSON header");

  json out_of_range = {{"t", {{"dtype", "F32"}, {"shape", {2, 2}}, {"data_offsets", {8, 24}}}}};
  e = error_of([&] { SafetensorsFile f(file_with(out_of_range, data)); });
  expect_contains(e, "'t'");
  expect_contains(e, "out of range");

  json overlap = {{"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
                  {"b", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {4, 12}}}}};
  expect_contains(error_of([&] { SafetensorsFile f(file_with(overlap, data)); }), "overlap");

  json wrong_size = {{"t", {{"dtype", "BF16"}, {"shape", {2, 2}}, {"data_offsets", {0, 16}}}}};
  expect_contains(error_of([&] { SafetensorsFile f(file_with(wrong_size, data)); }), "need 8");

  json bad_dtype = {{"t", {{"dtype", "Q4"}, {"shape", {2}}, {"data_offsets", {0, 2}}}}};
  expect_contains(error_of([&] { SafetensorsFile f(file_with(bad_dtype, data)); }), "unknown dtype 'Q4'");

  json neg_shape = {{"t", {{"dtype", "F32"}, {"shape", {-1}}, {"data_offsets", {0, 4}}}}};
  expect_contains(error_of([&] { SafetensorsFile f(file_with(neg_shape, data)); }), "non-negative");

  json not_entry = {{"t", 5}};
  expect_contains(error_of([&] { SafetensorsFile f(file_with(not_entry, data)); }), "data_offsets");
}

class ModelDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_ = preset_config("tiny");
    cfg_.num_hidden_layers = 2;
    dir_ = test::temp_dir("model") + "/m";
    ThreadPool pool(2);
    RandomModelOptions opt;
    opt.dtype = DType::BF16;
    write_random_model(cfg_, dir_, opt, pool);
  }
  ModelConfig cfg_;
  std::string dir_;
};

TEST_F(ModelDirTest, LoadsAValidModel) {
  LoadedModel m = load_model(dir_);
  EXPECT_EQ(m.weights.layers.size(), 2u);
  EXPECT_FALSE(m.weights.layers[0].moe);
  EXPECT_TRUE(m.weights.layers[1].moe);
  EXPECT_EQ(m.weights.layers[1].experts.size(), size_t(cfg_.n_routed_experts));
}

TEST_F(ModelDirTest, NamesMissingAndMisshapedTensors) {
  // Rewrite the file without one tensor and with another one mis-shaped.
  SafetensorsFile f(dir_ + "/model.safetensors");
  std::vector<SafetensorsWriter::Entry> entries;
  std::vector<const TensorRef*> refs;
  for (const auto& [name, t] : f.tensors()) {
    if (name == "model.layers.1.mlp.experts.3.up_proj.weight") continue;
    std::vector<int64_t> shape = t.shape;
    if (name == "model.layers.0.self_attn.kv_b_proj.weight") std::swap(shape[0], shape[1]);
    entries.push_back({name, t.dtype(), shape});
    refs.push_back(&t);
  }
  std::string broken = test::temp_dir("model") + "/broken";
  std::filesystem::create_directories(broken);
  std::filesystem::copy_file(dir_ + "/config.json", broken + "/config.json");
  SafetensorsWriter w(broken + "/model.safetensors", entries);
  for (const TensorRef* t : refs) w.write_next(t->data, t->n_bytes);
  w.finish();
  std::string e = error_of([&] { load_model(broken); });
  expect_contains(e, "2 tensor problem(s)");
  expect_contains(e, "missing tensor 'model.layers.1.mlp.experts.3.up_proj.weight'");
  expect_contains(e, "'model.layers.0.self_attn.kv_b_proj.weight' has shape [32, 128], config.json implies [128, 32]");
}

TEST_F(ModelDirTest, RejectsAnUnsupportedDtype) {
  SafetensorsFile f(dir_ + "/model.safetensors");
  std::string other = test::temp_dir("model") + "/i32";
  std::filesystem::create_directories(other);
  std::filesystem::copy_file(dir_ + "/config.json", other + "/config.json");
  // Same bytes, but the norm is declared I16 (same size as BF16).
  json header = json::object();
  std::string data;
  for (const auto& [name, t] : f.tensors()) {
    std::string dt = name == "model.norm.weight" ? "I16" : t.dtype_name;
    header[name] = {{"dtype", dt}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.n_bytes}}};
    data.append(reinterpret_cast<const char*>(t.data), t.n_bytes);
  }
  test::write_file(other + "/model.safetensors", safetensors_bytes(header, data));
  expect_contains(error_of([&] { load_model(other); }), "'model.norm.weight' has dtype I16");
}

TEST_F(ModelDirTest, ShardedIndexProblemsAreNamed) {
  std::string dir = test::temp_dir("model") + "/sharded";
  ThreadPool pool(2);
  RandomModelOptions opt;
  opt.dtype = DType::F32;
  opt.max_shard_bytes = 200000;  // forces several shards
  write_random_model(cfg_, dir, opt, pool);
  ASSERT_TRUE(std::filesystem::exists(dir + "/model.safetensors.index.json"));
  LoadedModel m = load_model(dir);
  EXPECT_EQ(m.weights.layers.size(), 2u);

  json index = json::parse(test::read_file(dir + "/model.safetensors.index.json"));
  const std::string first = index["weight_map"]["model.embed_tokens.weight"];
  const std::string last = index["weight_map"]["model.norm.weight"];
  EXPECT_EQ(first.substr(0, 12), "model-00001-");
  ASSERT_NE(first, last);
  json moved = index;
  moved["weight_map"]["model.norm.weight"] = first;
  test::write_file(dir + "/model.safetensors.index.json", moved.dump());
  expect_contains(error_of([&] { load_model(dir); }), "'model.norm.weight' is mapped to " + first);

  json missing_file = index;
  missing_file["weight_map"]["model.norm.weight"] = "model-00009-of-000009.safetensors";
  test::write_file(dir + "/model.safetensors.index.json", missing_file.dump());
  expect_contains(error_of([&] { load_model(dir); }), "model-00009-of-000009.safetensors: cannot open");

  json escape = index;
  escape["weight_map"]["model.norm.weight"] = "../x.safetensors";
  test::write_file(dir + "/model.safetensors.index.json", escape.dump());
  expect_contains(error_of([&] { load_model(dir); }), "not a file in the model directory");

  test::write_file(dir + "/model.safetensors.index.json", "{\"weight_map\": [");
  expect_contains(error_of([&] { load_model(dir); }), "invalid JSON");
}

TEST(ModelDir, MissingFilesAreNamed) {
  std::string dir = test::temp_dir("empty");
  expect_contains(error_of([&] { load_model(dir); }), "config.json: cannot open");
  test::write_file(dir + "/config.json", model_config_to_json(preset_config("tiny")).dump());
  expect_contains(error_of([&] { load_model(dir); }), "no model.safetensors or model.safetensors.index.json");
  expect_contains(error_of([&] { load_model(dir + "/nope"); }), "nope/config.json");
}

}  // namespace
}  // namespace dsv2

namespace dsv2 {
namespace {

TEST(Safetensors, ShardPlanGroupsConsecutiveTensors) {
  // 40 + 50 > 80: a new shard; 100 alone exceeds the limit and gets a shard of its own; the last (30)
  // stays with its predecessor even past the limit.
  const ShardPlan plan = plan_shards({40, 30, 50, 100, 20, 70, 30}, 80, {false, false, false, false, false, false, true});
  EXPECT_EQ(plan.shards, (std::vector<std::vector<size_t>>{{0, 1}, {2}, {3}, {4}, {5, 6}}));
  EXPECT_EQ(plan.total_bytes, 340u);
  EXPECT_EQ(plan.file_name(1), "model-00002-of-00005.safetensors");
  EXPECT_EQ(plan_shards({10, 20}, 80).file_name(0), "model.safetensors");
}

}  // namespace
}  // namespace dsv2
