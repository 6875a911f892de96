#include "model/quantized_checkpoint.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"
#include "model/quantize.h"

namespace dsv2 {

namespace {

// Files of a model directory besides config.json and the weights, copied when present.
const char* const kCopiedFiles[] = {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja",
                                    "special_tokens_map.json"};

// One tensor to write: a quantized matrix's values or scales, or a tensor copied as stored.
struct OutTensor {
  SafetensorsWriter::Entry entry;
  const Matrix* quantized = nullptr;  // the source matrix (values or scales of it); null: copy `stored`
  bool scales = false;
  const TensorRef* stored = nullptr;
};

}  // namespace

void write_quantized_model(const std::string& src_dir, const LoadedModel& m, DType format, const std::string& out_dir,
                           ThreadPool& pool, uint64_t max_shard_bytes) {
  namespace fs = std::filesystem;
  check(is_quantized(format), "write_quantized_model: the format must be int8 or q4");
  check(!m.config.quantized_linear, src_dir + ": already quantized (" + dtype_name(*m.config.quantized_linear) +
                                        "); quantize the BF16/F16/F32 original instead");
  std::error_code ec;
  check(!fs::exists(out_dir) || (fs::is_directory(out_dir) && fs::is_empty(out_dir)),
        out_dir + ": already exists and is not an empty directory (refusing to overwrite)");
  fs::create_directories(out_dir, ec);
  check(!ec && fs::is_directory(out_dir), out_dir + ": cannot create directory: " + ec.message());

  {
    nlohmann::json config = nlohmann::json::parse(read_text_file(src_dir + "/config.json"));
    config["quantization_config"] = {{"quant_method", "dsv2"}, {"format", dtype_name(format)}, {"block_size", kQuantBlock}};
    std::ofstream f(out_dir + "/config.json");
    f << config.dump(2) << "\n";
    check(bool(f), out_dir + "/config.json: write failed");
  }
  for (const char* name : kCopiedFiles) {
    if (!fs::exists(src_dir + "/" + name)) continue;
    fs::copy_file(src_dir + "/" + name, out_dir + "/" + name, ec);
    check(!ec, out_dir + "/" + name + ": cannot copy: " + ec.message());
  }

  // Every tensor in checkpoint order, Linear matrices as values + scales.
  ModelWeights weights = m.weights;
  std::map<std::string, const Matrix*> linear;
  for (auto& [name, W] : linear_matrices(m.config, weights)) linear[name] = W;
  std::vector<OutTensor> tensors;
  for (const TensorSpec& s : checkpoint_tensor_specs(m.config)) {
    auto it = linear.find(s.name);
    if (it == linear.end()) {
      const TensorRef* t = m.checkpoint->find(s.name);
      tensors.push_back({{s.name, t->dtype(), t->shape}, nullptr, false, t});
      continue;
    }
    const int64_t rows = s.shape[0], cols = s.shape[1];
    tensors.push_back({{s.name, format, {rows, quant_row_bytes(format, cols)}}, it->second, false, nullptr});
    tensors.push_back({{s.name + ".scales", DType::F16, {rows, quant_blocks(cols)}}, it->second, true, nullptr});
  }
  auto bytes_of = [](const SafetensorsWriter::Entry& e) {
    uint64_t n = dtype_size(e.dtype);
    for (int64_t d : e.shape) n *= uint64_t(d);
    return n;
  };

  // Shards of consecutive tensors; a matrix's scales stay beside its values.
  std::vector<uint64_t> bytes;
  std::vector<bool> is_scales;
  for (const OutTensor& t : tensors) {
    bytes.push_back(bytes_of(t.entry));
    is_scales.push_back(t.scales);
  }
  const ShardPlan plan = plan_shards(bytes, max_shard_bytes, is_scales);

  std::map<std::string, std::string> weight_map;
  std::vector<uint8_t> buf;  // [rows, row_bytes] values then [rows, blocks] scales of the matrix being written
  for (size_t s = 0; s < plan.shards.size(); ++s) {
    const std::string file = plan.file_name(s);
    std::vector<SafetensorsWriter::Entry> entries;
    for (size_t i : plan.shards[s]) entries.push_back(tensors[i].entry);
    SafetensorsWriter writer(out_dir + "/" + file, entries);
    for (size_t i : plan.shards[s]) {
      const OutTensor& t = tensors[i];
      weight_map[t.entry.name] = file;
      if (!t.quantized) {
        writer.write_next(t.stored->data, t.stored->n_bytes);
        continue;
      }
      const size_t values_bytes = size_t(t.quantized->rows * quant_row_bytes(format, t.quantized->cols));
      if (!t.scales) {
        Matrix W = *t.quantized;
        quantize_matrix(W, format, buf, pool);
        writer.write_next(buf.data(), values_bytes);
      } else {
        writer.write_next(buf.data() + values_bytes, buf.size() - values_bytes);
      }
    }
    writer.finish();
  }
  if (plan.shards.size() > 1) write_safetensors_index(out_dir, plan.total_bytes, weight_map);
}

}  // namespace dsv2
