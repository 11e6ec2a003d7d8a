#include "format/checkpoint.h"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack: no allocation to fail
#include <xxhash.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/fault_guard.h"
#include "core/file_io.h"
#include "format/json_util.h"

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
  GPTOSS_ASSIGN(std::string text, read_regular_file(p.string(), kMaxJsonFileBytes));
  return parse_json_strict(text, p.string());
}

// An openai original/ config (num_experts, experts_per_token) rather than a Hugging Face one.
bool is_original_config(const json& j) {
  return j.is_object() && j.contains("num_experts") && !j.contains("num_local_experts");
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
    if (!it.value().is_string())
      return Error("{}: weight_map[{}] is {}, expected a file name", index_path.string(), quote_name(it.key()),
                   describe_json(it.value()));
    std::string fn = it.value().get<std::string>();
    if (fn.empty() || fn.find('/') != std::string::npos || fn.find("..") != std::string::npos ||
        fn.find('\0') != std::string::npos)
      return Error("{}: weight_map[{}] names {}, which is not a file in the directory", index_path.string(),
                   quote_name(it.key()), quote_name(fn));
    std::string path = (index_path.parent_path() / fn).string();
    if (!fs::exists(path))
      return Error("{}: tensor {} is in {}, which does not exist", index_path.string(), quote_name(it.key()),
                   quote_name(fn));
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

Result<Checkpoint> Checkpoint::open(const std::string& dir, const CheckpointOptions& opts) {
  try {
    return open_impl(dir, opts);
  } catch (const std::exception& e) {  // std::bad_alloc, std::length_error, filesystem_error
    return Error("{}: cannot open checkpoint: {}", dir, e.what());
  }
}

Result<Checkpoint> Checkpoint::open_impl(const std::string& dir_str, const CheckpointOptions& opts) {
  const fs::path dir(dir_str);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Error("{}: not a directory", dir_str);
  Checkpoint ck;
  ck.dir_ = dir_str;

  // 1. Layout and config. An original/ directory itself (config.json with the openai keys beside
  // model.safetensors) is recognised by its config, before the file names would call it Hugging Face.
  fs::path wdir = dir;
  std::optional<json> own_config;
  if (!fs::exists(dir / "gptoss.json") && !fs::exists(dir / "model.safetensors.index.json") &&
      fs::exists(dir / "config.json")) {
    GPTOSS_ASSIGN(own_config, read_json(dir / "config.json"));
  }
  if (fs::exists(dir / "gptoss.json")) {
    ck.layout_ = CheckpointLayout::Native;
  } else if (own_config && is_original_config(*own_config)) {
    ck.layout_ = CheckpointLayout::Original;
  } else if (fs::exists(dir / "model.safetensors.index.json") || fs::exists(dir / "model.safetensors")) {
    ck.layout_ = CheckpointLayout::HuggingFace;
  } else if (fs::exists(dir / "original" / "config.json")) {
    ck.layout_ = CheckpointLayout::Original;
    wdir = dir / "original";
  } else if (own_config) {
    ck.layout_ = CheckpointLayout::HuggingFace;
  } else {
    return Error("{}: no config.json, gptoss.json or original/config.json: not a gpt-oss checkpoint", dir_str);
  }
  ck.config_dir_ = wdir.string();
  if (!fs::exists(wdir / "config.json")) return Error("{}: missing config.json", wdir.string());
  ModelConfig full;
  if (own_config && wdir == dir) {
    GPTOSS_ASSIGN(full, ModelConfig::from_json(*own_config, (wdir / "config.json").string()));
  } else {
    GPTOSS_ASSIGN(full, ModelConfig::load((wdir / "config.json").string()));
  }
  ck.full_layers_ = full.num_hidden_layers;
  int layers = full.num_hidden_layers;
  if (opts.max_layers >= 0) layers = std::min(layers, opts.max_layers);
  ck.config_ = full.first_layers(layers);

  // 2. Files.
  GPTOSS_ASSIGN(FileSet fset, discover_files(wdir));
  TensorLocations where;
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
    if (src.rows_end >= 0) {  // fused qkv: the full tensor has 2*kv more rows (> 0: config limits)
      want[0] = int64_t(ck.config_.q_dim()) + 2 * int64_t(ck.config_.kv_dim());
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
  // 6. Native: the manifest must describe exactly these files, names, dtypes, shapes and offsets.
  if (ck.layout_ == CheckpointLayout::Native) GPTOSS_TRY(ck.load_manifest_checksums(where));
  return ck;
}

Status Checkpoint::load_manifest_checksums(const TensorLocations& where) {
  const std::string mpath = (fs::path(dir_) / "gptoss.json").string();
  GPTOSS_ASSIGN(Manifest m, load_manifest(mpath));
  if (m.num_hidden_layers != 0 && m.num_hidden_layers != int64_t(full_layers_))
    return Error("{}: num_hidden_layers {}, but config.json says {}", mpath, m.num_hidden_layers,
                 full_layers_);
  std::set<std::string> manifest_files;
  for (const ManifestTensor& t : m.tensors) {
    const std::string at = fmt::format("{}: tensor {}", mpath, quote_name(t.name));
    auto it = where.find(t.name);
    if (it == where.end()) return Error("{}: listed, but no safetensors file of the checkpoint has it", at);
    const auto& [fi, info] = it->second;
    const SafetensorsFile& f = *files_[fi];
    const std::string file = fs::path(f.path()).filename().string();
    if (t.file != file) return Error("{}: manifest says file {}, but it is in {}", at, quote_name(t.file), file);
    if (t.dtype != info->dtype || t.shape != info->shape)
      return Error("{}: manifest says {} {}, {} says {} {}", at, dtype_name(t.dtype), shape_str(t.shape), file,
                   dtype_name(info->dtype), shape_str(info->shape));
    if (t.offset != f.data_offset() + info->begin || t.nbytes != info->nbytes())
      return Error("{}: manifest says bytes [{}, {}+{}), {} says [{}, {}+{})", at, t.offset, t.offset, t.nbytes, file,
                   f.data_offset() + info->begin, f.data_offset() + info->begin, info->nbytes());
    manifest_files.insert(t.file);
    checksum_index_[t.name] = checksummed_.size();
    checksummed_.push_back({t.name, fi, f.data(*info), t.xxh3});
  }
  if (checksummed_.size() != where.size()) {
    for (const auto& [name, loc] : where)
      if (!checksum_index_.count(name))
        return Error("{}: tensor {} in {} is not listed in the manifest", mpath, quote_name(name),
                     fs::path(files_[loc.first]->path()).filename().string());
  }
  for (const auto& f : files_)
    if (!manifest_files.count(fs::path(f->path()).filename().string()))
      return Error("{}: {} holds no tensor of the manifest", mpath, fs::path(f->path()).filename().string());
  return {};
}

const ChecksummedTensor* Checkpoint::checksum_of(std::string_view hf_name) const {
  auto it = checksum_index_.find(std::string(hf_name));
  return it == checksum_index_.end() ? nullptr : &checksummed_[it->second];
}

bool xxh3_of_mapped(std::span<const uint8_t> bytes, uint64_t& out, Progress* progress, const MappedFile* drop_after) {
  constexpr size_t kStep = 8u << 20;
  XXH3_state_t state;
  XXH3_state_t* const st = &state;
  XXH3_INITSTATE(st);
  XXH3_64bits_reset(st);
  bool ok = true;
  for (size_t p = 0; p < bytes.size() && ok; p += kStep) {
    struct Args {
      XXH3_state_t* st;
      const uint8_t* data;
      size_t n;
    } a{st, bytes.data() + p, std::min(kStep, bytes.size() - p)};
    ok = run_sigbus_guarded([](void* v) {
      auto* x = static_cast<Args*>(v);
      XXH3_64bits_update(x->st, x->data, x->n);
    }, &a);
    if (drop_after) drop_after->advise_dontneed(size_t(a.data - drop_after->data()), a.n);
    if (progress) progress->add(a.n);
  }
  out = XXH3_64bits_digest(st);
  return ok;
}

Status Checkpoint::check_files_unchanged() const {
  for (const auto& f : files_) GPTOSS_TRY(f->file().check_size());
  return {};
}

Status Checkpoint::verify_checksums(Progress* progress) const {
  if (layout_ != CheckpointLayout::Native)
    return Error("{}: {} layout has no checksums (only a native checkpoint, with gptoss.json, has them)", dir_,
                 layout_name(layout_));
  for (const ChecksummedTensor& t : checksummed_) {
    const MappedFile& mf = files_[t.file_index]->file();
    const std::string& file = mf.path();
    uint64_t got = 0;
    if (!xxh3_of_mapped(t.bytes, got, progress, &mf)) {
      GPTOSS_TRY(mf.check_size());
      return Error("{}: tensor {}: read fault while hashing", file, quote_name(t.name));
    }
    if (got != t.xxh3)
      return Error("{}: tensor {}: checksum {:016x}, manifest says {:016x}", file, quote_name(t.name), got, t.xxh3);
  }
  return {};
}

}  // namespace gptoss
