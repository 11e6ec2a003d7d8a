#include "format/checkpoint.h"

#include "core/file_io.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace gptoss {

namespace fs = std::filesystem;
using json = nlohmann::json;

const char* layout_name(CheckpointLayout l) {
  switch (l) {
    case CheckpointLayout::Native: return "native";
    case CheckpointLayout::HuggingFace: return "huggingface";
    case CheckpointLayout::Original: return "original";
  }
  return "?";
}

namespace {

Result<json> read_json(const fs::path& p) {
  GPTOSS_ASSIGN(std::string text, read_file(p.string()));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return Error("{}: not valid JSON", p.string());
  return j;
}

// Which files hold the weights, and which tensor name is in which file.
struct FileSet {
  std::vector<std::string> files;                // paths
  std::map<std::string, std::string> weight_map;  // name -> path, from an index (empty without one)
};

Result<FileSet> files_from_index(const fs::path& index_path) {
  GPTOSS_ASSIGN(json idx, read_json(index_path));
  auto wm = idx.find("weight_map");
  if (!idx.is_object() || wm == idx.end() || !wm->is_object())
    return Error("{}: no 'weight_map' object", index_path.string());
  FileSet fsOut;
  std::set<std::string> seen;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string()) return Error("{}: weight_map['{}'] is not a file name", index_path.string(), it.key());
    std::string fn = it.value().get<std::string>();
    if (fn.find('/') != std::string::npos || fn.find("..") != std::string::npos)
      return Error("{}: weight_map['{}'] names '{}', which is outside the directory", index_path.string(), it.key(), fn);
    std::string path = (index_path.parent_path() / fn).string();
    if (!fs::exists(path))
      return Error("{}: tensor '{}' is in '{}', which does not exist", index_path.string(), it.key(), fn);
    fsOut.weight_map[it.key()] = path;
    if (seen.insert(path).second) fsOut.files.push_back(path);
  }
  std::sort(fsOut.files.begin(), fsOut.files.end());
  return fsOut;
}

Result<FileSet> discover_files(const fs::path& d) {
  if (fs::exists(d / "model.safetensors.index.json")) return files_from_index(d / "model.safetensors.index.json");
  FileSet out;
  if (fs::exists(d / "model.safetensors")) {
    out.files.push_back((d / "model.safetensors").string());
    return out;
  }
  for (const auto& e : fs::directory_iterator(d))
    if (e.path().extension() == ".safetensors") out.files.push_back(e.path().string());
  std::sort(out.files.begin(), out.files.end());
  if (out.files.empty()) return Error("{}: no .safetensors files and no model.safetensors.index.json", d.string());
  return out;
}

bool is_float_dtype(DType t) { return t == DType::BF16 || t == DType::F32 || t == DType::F16; }

}  // namespace

const TensorData* Checkpoint::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

uint64_t Checkpoint::tensor_bytes() const {
  uint64_t n = 0;
  for (const auto& t : tensors_) n += t.bytes.size();
  return n;
}

DType Checkpoint::expert_dtype() const {
  for (const auto& t : tensors_)
    if (t.spec.role == TensorRole::GateUpDense || t.spec.role == TensorRole::GateUpBlocks) return t.dtype;
  return DType::U8;
}

Result<Checkpoint> Checkpoint::open(const std::string& dir_str, const CheckpointOptions& opts) {
  const fs::path dir(dir_str);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Error("{}: not a directory", dir_str);
  Checkpoint ck;
  ck.dir_ = dir_str;

  // 1. Layout and config.
  fs::path wdir = dir;
  if (fs::exists(dir / "gptoss.json")) {
    ck.layout_ = CheckpointLayout::Native;
  } else if (fs::exists(dir / "model.safetensors.index.json") || fs::exists(dir / "model.safetensors")) {
    ck.layout_ = CheckpointLayout::HuggingFace;
  } else if (fs::exists(dir / "original" / "config.json")) {
    ck.layout_ = CheckpointLayout::Original;
    wdir = dir / "original";
  } else if (fs::exists(dir / "config.json")) {
    // A bare original/ directory passed directly is recognised by its config keys.
    GPTOSS_ASSIGN(json j, read_json(dir / "config.json"));
    if (j.is_object() && j.contains("num_experts") && !j.contains("num_local_experts"))
      ck.layout_ = CheckpointLayout::Original;
    else
      ck.layout_ = CheckpointLayout::HuggingFace;
  } else {
    return Error("{}: no config.json, gptoss.json or original/config.json: not a gpt-oss checkpoint", dir_str);
  }
  ck.config_dir_ = wdir.string();
  if (!fs::exists(wdir / "config.json")) return Error("{}: missing config.json", wdir.string());
  GPTOSS_ASSIGN(ModelConfig full, ModelConfig::load((wdir / "config.json").string()));
  int layers = full.num_hidden_layers;
  if (opts.max_layers >= 0) layers = std::min(layers, opts.max_layers);
  ck.config_ = full.first_layers(layers);

  // 2. Files.
  GPTOSS_ASSIGN(FileSet fset, discover_files(wdir));
  std::unordered_map<std::string, std::pair<size_t, const TensorInfo*>> where;  // name in file -> (file, info)
  for (const auto& path : fset.files) {
    GPTOSS_ASSIGN(SafetensorsFile f, SafetensorsFile::open(path));
    ck.files_.push_back(std::make_unique<SafetensorsFile>(std::move(f)));
    const size_t fi = ck.files_.size() - 1;
    for (const auto& t : ck.files_.back()->tensors()) {
      auto [it, fresh] = where.emplace(t.name, std::make_pair(fi, &t));
      if (!fresh)
        return Error("{}: tensor '{}' appears in both {} and {}", dir_str, t.name,
                     fs::path(ck.files_[it->second.first]->path()).filename().string(),
                     fs::path(path).filename().string());
    }
  }
  for (const auto& [name, path] : fset.weight_map) {
    auto it = where.find(name);
    if (it == where.end())
      return Error("{}: index maps tensor '{}' to {}, but that file does not contain it", dir_str, name,
                   fs::path(path).filename().string());
    if (ck.files_[it->second.first]->path() != path)
      return Error("{}: index maps tensor '{}' to {}, but it is in {}", dir_str, name, fs::path(path).filename().string(),
                   fs::path(ck.files_[it->second.first]->path()).filename().string());
  }

  // 3. Expert storage: MXFP4 unless dense expert weights are present.
  const bool original = ck.layout_ == CheckpointLayout::Original;
  ck.experts_ = (!original && where.count("model.layers.0.mlp.experts.gate_up_proj")) ? ExpertStorage::Dense
                                                                                        : ExpertStorage::Mxfp4;

  // 4. Every expected tensor: present, right dtype, right shape.
  std::set<std::string> used;
  for (TensorSpec& spec : model_tensor_specs(ck.config_, ck.experts_)) {
    OriginalSource src = original ? original_source(spec, ck.config_) : OriginalSource{spec.name};
    auto it = where.find(src.name);
    if (it == where.end())
      return Error("{}: missing tensor '{}'{}", dir_str, src.name,
                   fset.weight_map.empty() ? "" : " (not in model.safetensors.index.json)");
    used.insert(src.name);
    const auto& [fi, info] = it->second;
    const std::string file = fs::path(ck.files_[fi]->path()).filename().string();
    const bool want_u8 = spec.quantized();
    if (want_u8 ? info->dtype != DType::U8 : !is_float_dtype(info->dtype))
      return Error("{}: tensor '{}': dtype {}, expected {}", file, src.name, dtype_name(info->dtype),
                   want_u8 ? "U8" : "BF16, F16 or F32");
    std::vector<int64_t> want = spec.shape;
    if (src.rows_end >= 0) {  // fused qkv: the full tensor has 2*kv more rows
      want[0] = ck.config_.q_dim() + 2 * ck.config_.kv_dim();
    }
    if (info->shape != want)
      return Error("{}: tensor '{}': shape {}, expected {} from config.json", file, src.name, shape_str(info->shape),
                   shape_str(want));
    std::span<const uint8_t> bytes = ck.files_[fi]->data(*info);
    if (src.rows_end >= 0) {
      const size_t row_bytes = bytes.size() / size_t(want[0]);
      bytes = bytes.subspan(size_t(src.rows_begin) * row_bytes, size_t(src.rows_end - src.rows_begin) * row_bytes);
    }
    ck.index_[spec.name] = ck.tensors_.size();
    ck.tensors_.push_back({std::move(spec), info->dtype, bytes, fi, src.name});
  }
  // 5. Anything else in the files means the config does not describe this checkpoint.
  if (opts.max_layers < 0) {
    for (const auto& [name, loc] : where)
      if (!used.count(name))
        return Error("{}: tensor '{}' in {} is not part of a {}-layer gpt-oss model described by config.json", dir_str,
                     name, fs::path(ck.files_[loc.first]->path()).filename().string(), ck.config_.num_hidden_layers);
  }
  // Dense experts: both expert matrices must share one dtype (the kernels take one type per op).
  return ck;
}

}  // namespace gptoss
