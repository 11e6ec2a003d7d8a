#include "format/manifest.h"

#include <limits>
#include <unordered_set>

#include "core/file_io.h"
#include "format/json_util.h"
#include "format/safetensors.h"

namespace gptoss {

using json = nlohmann::json;

namespace {

Status get_string(const json& o, const char* key, std::string& out, const std::string& where) {
  auto it = o.find(key);
  if (it == o.end() || !it->is_string())
    return Error("{}: '{}' is {}, expected a string", where, key, it == o.end() ? "missing" : describe_json(*it));
  out = it->get<std::string>();
  return {};
}

Status get_u64(const json& o, const char* key, uint64_t& out, const std::string& where) {
  auto it = o.find(key);
  if (it == o.end() || !it->is_number_unsigned())
    return Error("{}: '{}' is {}, expected a non-negative integer", where, key,
                 it == o.end() ? "missing" : describe_json(*it));
  out = it->get<uint64_t>();
  return {};
}

bool plain_file_name(const std::string& f) {
  return !f.empty() && f != "." && f != ".." && f.find('/') == std::string::npos && f.find('\0') == std::string::npos;
}

Result<ManifestTensor> parse_tensor(const json& e, size_t i, const std::string& what) {
  const std::string at = fmt::format("{}: tensors[{}]", what, i);
  if (!e.is_object()) return Error("{} is {}, expected an object", at, describe_json(e));
  ManifestTensor t;
  GPTOSS_TRY(get_string(e, "name", t.name, at));
  if (t.name.empty()) return Error("{}: empty tensor name", at);
  const std::string where = fmt::format("{}: tensor {}", what, describe_json(json(t.name)));
  GPTOSS_TRY(get_string(e, "file", t.file, where));
  if (!plain_file_name(t.file))
    return Error("{}: file {} is not a file name in the checkpoint directory", where, describe_json(json(t.file)));
  std::string dt, sum;
  GPTOSS_TRY(get_string(e, "dtype", dt, where));
  auto d = dtype_from_string(dt);
  if (!d) return Error("{}: unknown dtype {}", where, describe_json(json(dt)));
  t.dtype = *d;
  auto sh = e.find("shape");
  if (sh == e.end() || !sh->is_array())
    return Error("{}: 'shape' is {}, expected an array", where, sh == e.end() ? "missing" : describe_json(*sh));
  uint64_t bytes = dtype_size(t.dtype);
  for (const json& x : *sh) {
    if (!x.is_number_unsigned() || x.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      return Error("{}: shape entry {} is not a non-negative integer", where, describe_json(x));
    const uint64_t dim = x.get<uint64_t>();
    if (dim != 0 && bytes > std::numeric_limits<uint64_t>::max() / dim)
      return Error("{}: shape {} overflows a 64-bit byte count", where, describe_json(*sh));
    bytes *= dim;
    t.shape.push_back(int64_t(dim));
  }
  GPTOSS_TRY(get_u64(e, "offset", t.offset, where));
  GPTOSS_TRY(get_u64(e, "nbytes", t.nbytes, where));
  if (t.nbytes != bytes)
    return Error("{}: nbytes {}, but {} {} is {} bytes", where, t.nbytes, dtype_name(t.dtype), shape_str(t.shape),
                 bytes);
  if (t.offset > std::numeric_limits<uint64_t>::max() - t.nbytes)
    return Error("{}: offset {} + nbytes {} overflows", where, t.offset, t.nbytes);
  GPTOSS_TRY(get_string(e, "xxh3", sum, where));
  bool hex = sum.size() == 16;
  for (char ch : sum) hex = hex && ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'));
  if (!hex) return Error("{}: xxh3 {} is not 16 lowercase hex digits", where, describe_json(json(sum)));
  t.xxh3 = std::stoull(sum, nullptr, 16);
  return t;
}

}  // namespace

Result<Manifest> parse_manifest(std::string_view text, const std::string& what) {
  try {
    GPTOSS_ASSIGN(json m, parse_json_strict(text, what));
    if (!m.is_object()) return Error("{}: manifest is {}, expected a JSON object", what, describe_json(m));
    Manifest out;
    std::string format;
    GPTOSS_TRY(get_string(m, "format", format, what));
    if (format != "gptoss-native")
      return Error("{}: format is {}, expected \"gptoss-native\"", what, describe_json(json(format)));
    uint64_t version = 0;
    GPTOSS_TRY(get_u64(m, "version", version, what));
    if (version != 1) return Error("{}: version {} is not supported (expected 1)", what, version);
    if (auto c = m.find("checksum"); c != m.end() && *c != "xxh3-64")
      return Error("{}: checksum {} is not supported (expected \"xxh3-64\")", what, describe_json(*c));
    if (m.contains("dtype")) GPTOSS_TRY(get_string(m, "dtype", out.dtype, what));
    if (m.contains("source_layout")) GPTOSS_TRY(get_string(m, "source_layout", out.source_layout, what));
    if (m.contains("num_hidden_layers")) {
      uint64_t n = 0;
      GPTOSS_TRY(get_u64(m, "num_hidden_layers", n, what));
      out.num_hidden_layers = int64_t(std::min<uint64_t>(n, uint64_t(std::numeric_limits<int64_t>::max())));
    }
    auto ts = m.find("tensors");
    if (ts == m.end() || !ts->is_array())
      return Error("{}: 'tensors' is {}, expected an array", what, ts == m.end() ? "missing" : describe_json(*ts));
    if (ts->empty()) return Error("{}: the manifest lists no tensors", what);
    std::unordered_set<std::string> names;
    out.tensors.reserve(ts->size());
    for (size_t i = 0; i < ts->size(); ++i) {
      GPTOSS_ASSIGN(ManifestTensor t, parse_tensor((*ts)[i], i, what));
      if (!names.insert(t.name).second)
        return Error("{}: tensor {} is listed twice", what, describe_json(json(t.name)));
      out.tensors.push_back(std::move(t));
    }
    return out;
  } catch (const std::exception& e) {
    return Error("{}: invalid manifest: {}", what, e.what());
  }
}

Result<Manifest> load_manifest(const std::string& path) {
  GPTOSS_ASSIGN(std::string text, read_regular_file(path, kMaxJsonFileBytes));
  return parse_manifest(text, path);
}

}  // namespace gptoss
