#include "model/random_model.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace dsv2 {

namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

// Fills `out` (numel values of `dtype`) with the tensor's random values, chunk-seeded.
void fill_tensor(const TensorSpec& spec, int64_t numel, DType dtype, uint64_t seed, ThreadPool& pool, void* out) {
  constexpr int64_t kChunk = 1 << 16;
  float centre = 0, half_width;
  switch (spec.role) {
    case TensorRole::Norm:
      centre = 1.0f;
      half_width = 0.1f;
      break;
    case TensorRole::Embedding:
      half_width = std::sqrt(3.0f);
      break;
    default:
      half_width = std::sqrt(3.0f / float(spec.shape.back()));
  }
  const uint64_t base = seed ^ fnv1a(spec.name);
  pool.parallel_for((numel + kChunk - 1) / kChunk, 1, [&](int64_t c0, int64_t c1) {
    std::vector<float> buf(static_cast<size_t>(kChunk));
    for (int64_t c = c0; c < c1; ++c) {
      uint64_t state = base + uint64_t(c) * 0x632be59bd9b4e019ull;
      const int64_t b = c * kChunk, n = std::min(kChunk, numel - b);
      for (int64_t i = 0; i < n; ++i) {
        double u = double(splitmix64(state) >> 11) * 0x1.0p-53;  // [0, 1)
        buf[size_t(i)] = centre + half_width * float(2.0 * u - 1.0);
      }
      convert_from_f32(dtype, buf.data(), static_cast<std::byte*>(out) + size_t(b) * dtype_size(dtype), size_t(n));
    }
  });
}

}  // namespace

void write_random_model(const ModelConfig& cfg, const std::string& dir, const RandomModelOptions& options,
                        ThreadPool& pool) {
  namespace fs = std::filesystem;
  std::error_code ec;
  check(!fs::exists(dir) || (fs::is_directory(dir) && fs::is_empty(dir)),
        dir + ": already exists and is not an empty directory (refusing to overwrite)");
  fs::create_directories(dir, ec);
  check(!ec && fs::is_directory(dir), dir + ": cannot create directory: " + ec.message());

  ModelConfig written = cfg;
  written.torch_dtype = options.dtype;
  {
    std::ofstream f(dir + "/config.json");
    f << model_config_to_json(written).dump(2) << "\n";
    check(bool(f), dir + "/config.json: write failed");
  }

  // The shards: consecutive tensors up to max_shard_bytes each.
  const std::vector<TensorSpec> specs = checkpoint_tensor_specs(cfg);
  auto numel_of = [](const TensorSpec& s) {
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    return n;
  };
  std::vector<uint64_t> bytes;
  for (const TensorSpec& s : specs) bytes.push_back(uint64_t(numel_of(s)) * dtype_size(options.dtype));
  const ShardPlan plan = plan_shards(bytes, options.max_shard_bytes);

  std::map<std::string, std::string> weight_map;
  std::vector<std::byte> buf;
  for (size_t s = 0; s < plan.shards.size(); ++s) {
    const std::string file = plan.file_name(s);
    std::vector<SafetensorsWriter::Entry> entries;
    for (size_t i : plan.shards[s]) entries.push_back({specs[i].name, options.dtype, specs[i].shape});
    SafetensorsWriter writer(dir + "/" + file, entries);
    for (size_t i : plan.shards[s]) {
      const int64_t numel = numel_of(specs[i]);
      buf.resize(size_t(numel) * dtype_size(options.dtype));
      fill_tensor(specs[i], numel, options.dtype, options.seed, pool, buf.data());
      writer.write_next(buf.data(), buf.size());
      weight_map[specs[i].name] = file;
    }
    writer.finish();
  }
  if (plan.shards.size() > 1) write_safetensors_index(dir, plan.total_bytes, weight_map);
}

}  // namespace dsv2
