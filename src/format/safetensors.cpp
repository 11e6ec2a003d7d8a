#include "format/safetensors.h"

#include "core/fault_guard.h"
#include "core/file_io.h"
#include "format/json_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

namespace gptoss {

using json = nlohmann::json;

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string quote_name(std::string_view name) {
  constexpr size_t kMax = 80;
  if (name.size() <= kMax) return fmt::format("'{}'", name);
  size_t n = kMax;
  while (n > 0 && (static_cast<unsigned char>(name[n]) & 0xC0) == 0x80) --n;  // whole UTF-8 characters
  return fmt::format("'{}...' ({} bytes)", name.substr(0, n), name.size());
}

std::string shape_str(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Result<SafetensorsHeader> parse_safetensors_header(std::span<const uint8_t> prefix, uint64_t file_size,
                                                   const std::string& what) {
  if (file_size < 8 || prefix.size() < 8)
    return Error("{}: file is {} bytes, too short for a safetensors header", what, file_size);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | prefix[size_t(i)];
  if (n > kMaxHeaderBytes) return Error("{}: header length {} exceeds the {} byte limit", what, n, kMaxHeaderBytes);
  if (n > file_size - 8) return Error("{}: header length {} runs past the end of the file ({} bytes)", what, n, file_size);
  if (prefix.size() < 8 + n) return Error("{}: header truncated", what);
  const char* b = reinterpret_cast<const char*>(prefix.data() + 8);
  // Strict parse: a repeated tensor name is an error (nlohmann alone would keep one of them).
  auto parsed = parse_json_strict(std::string_view(b, size_t(n)), what + ": header");
  if (!parsed.ok()) return parsed.status();
  const json& j = *parsed;
  if (!j.is_object()) return Error("{}: header is not a JSON object", what);

  SafetensorsHeader h;
  h.data_offset = 8 + n;
  const uint64_t data_size = file_size - h.data_offset;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const std::string name = quote_name(key);
    const json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) return Error("{}: __metadata__ is {}, expected an object", what, describe_json(v));
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          return Error("{}: __metadata__[{}] is not a string", what, quote_name(m.key()));
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) return Error("{}: tensor {}: entry is not an object", what, name);
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) return Error("{}: tensor {}: missing or non-string dtype", what, name);
    if (sh == v.end() || !sh->is_array()) return Error("{}: tensor {}: missing or non-array shape", what, name);
    if (off == v.end() || !off->is_array() || off->size() != 2)
      return Error("{}: tensor {}: data_offsets must be [begin, end]", what, name);
    TensorInfo t;
    t.name = key;
    auto d = dtype_from_string(dt->get<std::string>());
    if (!d) return Error("{}: tensor {}: unknown dtype {}", what, name, describe_json(*dt));
    t.dtype = *d;
    // numel * size with overflow checks: a hostile header must not wrap around.
    uint64_t bytes = dtype_size(t.dtype);
    for (const json& e : *sh) {
      if (!e.is_number_unsigned())
        return Error("{}: tensor {}: shape entries must be non-negative integers", what, name);
      uint64_t dim = e.get<uint64_t>();
      if (dim > uint64_t(std::numeric_limits<int64_t>::max()))
        return Error("{}: tensor {}: dimension {} too large", what, name, dim);
      if (dim != 0 && bytes > std::numeric_limits<uint64_t>::max() / dim)
        return Error("{}: tensor {}: shape overflows", what, name);
      bytes *= dim;
      t.shape.push_back(int64_t(dim));
    }
    if (!(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
      return Error("{}: tensor {}: data_offsets must be non-negative integers", what, name);
    t.begin = (*off)[0].get<uint64_t>();
    t.end = (*off)[1].get<uint64_t>();
    if (t.begin > t.end) return Error("{}: tensor {}: data_offsets [{}, {}] are reversed", what, name, t.begin, t.end);
    if (t.end > data_size)
      return Error("{}: tensor {}: data_offsets end {} is past the data section ({} bytes; file truncated?)", what,
                   name, t.end, data_size);
    if (t.end - t.begin != bytes)
      return Error("{}: tensor {}: {} {} needs {} bytes, data_offsets give {}", what, name, dtype_name(t.dtype),
                   shape_str(t.shape), bytes, t.end - t.begin);
    h.tensors.push_back(std::move(t));
  }
  // The safetensors rule: sorted by offsets, the tensors tile the data section exactly: the first
  // begins at 0, each where the previous ended, the last ends at the end of the file. Zero-size
  // tensors take part (one lying inside another tensor breaks the chain like any overlap).
  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t at = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo& c : h.tensors) {
    if (c.begin < at)
      return Error("{}: tensors {} [{}, {}) and {} [{}, {}) overlap", what, quote_name(prev->name), prev->begin,
                   prev->end, quote_name(c.name), c.begin, c.end);
    if (c.begin > at)
      return Error("{}: data bytes [{}, {}) before tensor {} belong to no tensor (safetensors allows no gaps)", what,
                   at, c.begin, quote_name(c.name));
    at = c.end;
    prev = &c;
  }
  if (at != data_size)
    return Error("{}: {} trailing bytes after the last tensor's data (the data section is {} bytes, tensors cover {})",
                 what, data_size - at, data_size, at);
  return h;
}

Result<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  GPTOSS_ASSIGN(f.file_, MappedFile::open(path));
  GPTOSS_ASSIGN(f.header_, parse_safetensors_header(f.file_.bytes(), f.file_.size(), path));
  for (size_t i = 0; i < f.header_.tensors.size(); ++i) f.index_.emplace(f.header_.tensors[i].name, i);
  return f;
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

std::string safetensors_header_json(const std::vector<TensorInfo>& tensors,
                                    const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps declaration order, so the header reads in file order.
  nlohmann::ordered_json j;
  if (!metadata.empty()) j["__metadata__"] = metadata;
  for (const auto& t : tensors)
    j[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {t.begin, t.end}}};
  return j.dump();
}

// ---------------------------------------------------------------------------------------------

namespace {
constexpr size_t kWriteBuffer = 8u << 20;

}  // namespace

Result<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::create(const std::string& path,
                                                                     std::vector<TensorDecl> decls,
                                                                     const std::map<std::string, std::string>& metadata,
                                                                     size_t align) {
  std::unique_ptr<SafetensorsWriter> w(new SafetensorsWriter());
  w->path_ = path;
  uint64_t off = 0;
  for (auto& d : decls) {
    TensorInfo t;
    t.name = std::move(d.name);
    t.dtype = d.dtype;
    t.shape = std::move(d.shape);
    t.begin = off;
    t.end = off + uint64_t(t.numel()) * dtype_size(t.dtype);
    off = t.end;
    w->infos_.push_back(std::move(t));
  }
  w->total_ = off;
  std::string h = safetensors_header_json(w->infos_, metadata);
  if (align < 8) align = 8;
  const size_t padded = ((8 + h.size() + align - 1) / align) * align - 8;
  h.resize(padded, ' ');
  w->data_offset_ = 8 + padded;
  w->fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (w->fd_ < 0) return Error("{}: cannot create: {}", path, std::strerror(errno));
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(h.size()) >> (8 * i));
  GPTOSS_TRY(write_all(w->fd_, len, 8, path));
  GPTOSS_TRY(write_all(w->fd_, reinterpret_cast<const uint8_t*>(h.data()), h.size(), path));
  w->buf_.resize(kWriteBuffer);
  return w;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) ::close(fd_);
}

Status SafetensorsWriter::flush() {
  GPTOSS_TRY(write_all(fd_, buf_.data(), buf_used_, path_));
  buf_used_ = 0;
  return {};
}

Status SafetensorsWriter::append(const void* data, size_t n) {
  if (fd_ < 0) return Error("{}: append after finish", path_);
  if (written_ + n > total_)
    return Error("{}: {} bytes appended past the declared {} data bytes", path_, written_ + n, total_);
  const uint8_t* p = static_cast<const uint8_t*>(data);
  written_ += n;
  if (n >= buf_.size()) {  // large chunk: bypass the buffer
    GPTOSS_TRY(flush());
    return write_all(fd_, p, n, path_);
  }
  while (n > 0) {
    size_t k = std::min(n, buf_.size() - buf_used_);
    // The bytes may lie in an input file's mapping: a file truncated meanwhile fails here, not by SIGBUS.
    if (!guarded_memcpy(buf_.data() + buf_used_, p, k))
      return Error("{}: the data to write could not be read (an input file shrank while being read)", path_);
    buf_used_ += k;
    p += k;
    n -= k;
    if (buf_used_ == buf_.size()) GPTOSS_TRY(flush());
  }
  return {};
}

Status SafetensorsWriter::finish() {
  if (fd_ < 0) return Error("{}: finish called twice", path_);
  if (written_ != total_) return Error("{}: {} of {} declared data bytes written", path_, written_, total_);
  GPTOSS_TRY(flush());
  if (::fsync(fd_) != 0) return Error("{}: fsync failed: {}", path_, std::strerror(errno));
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) return Error("{}: close failed: {}", path_, std::strerror(errno));
  return {};
}

}  // namespace gptoss
