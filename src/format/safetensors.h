// Safetensors I/O. Layout: u64 little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the data section.
//
// The reader maps the file and validates everything before handing out a pointer, by the format's
// own rules: header length within the file and under kMaxHeaderBytes, valid JSON with every tensor
// name once, known dtypes, shape x dtype size equal to the byte range (overflow-checked), and the
// ranges tiling the data section exactly (no gap, no overlap, no trailing bytes).
// The writer streams: the tensor list is declared up front, the header written, then bytes appended
// in declaration order; nothing is held in memory beyond one I/O buffer.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"
#include "core/mmap_file.h"
#include "core/status.h"

namespace gptoss {

inline constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // safetensors' own limit is 100 MB

struct TensorInfo {
  std::string name;
  DType dtype = DType::U8;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets relative to the start of the data section
  uint64_t end = 0;
  uint64_t nbytes() const { return end - begin; }
  int64_t numel() const;
};

std::string shape_str(std::span<const int64_t> shape);  // "[2880, 4096]"
// A tensor or key name for a message: 'name', cut after 80 bytes (names in a hostile header can be MBs).
std::string quote_name(std::string_view name);

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // sorted by begin offset
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;  // 8 + header length
};

// Parses and validates a header given the whole file's first bytes (at least 8 + N of them) and the
// file size. `what` names the file in messages. Exposed separately for the fuzzer.
Result<SafetensorsHeader> parse_safetensors_header(std::span<const uint8_t> file_prefix, uint64_t file_size,
                                                   const std::string& what);

class SafetensorsFile {
 public:
  static Result<SafetensorsFile> open(const std::string& path);

  const std::string& path() const { return file_.path(); }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorInfo* find(std::string_view name) const;
  // Zero-copy view of a tensor's bytes inside the mapping.
  std::span<const uint8_t> data(const TensorInfo& t) const {
    return {file_.data() + header_.data_offset + t.begin, t.nbytes()};
  }
  uint64_t data_offset() const { return header_.data_offset; }
  const MappedFile& file() const { return file_; }

 private:
  MappedFile file_;
  SafetensorsHeader header_;
  std::unordered_map<std::string, size_t> index_;
};

struct TensorDecl {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};

class SafetensorsWriter {
 public:
  // Creates `path` (truncating) and writes the header. The data section starts at a multiple of
  // `align` bytes (header padded with spaces, as the format allows), so a reader that maps the
  // file sees every tensor at `align` + its offset.
  static Result<std::unique_ptr<SafetensorsWriter>> create(const std::string& path, std::vector<TensorDecl> tensors,
                                                           const std::map<std::string, std::string>& metadata = {},
                                                           size_t align = 64);
  ~SafetensorsWriter();

  // Appends bytes to the tensors in declaration order; a chunk may span tensor boundaries.
  Status append(const void* data, size_t n);
  // Checks that every declared byte was written, flushes, fsyncs and closes.
  Status finish();

  uint64_t data_bytes_total() const { return total_; }
  uint64_t data_bytes_written() const { return written_; }
  const std::vector<TensorInfo>& tensors() const { return infos_; }
  // File offset of the data section (8 + padded header length): tensor i starts at data_offset() + begin.
  uint64_t data_offset() const { return data_offset_; }

 private:
  SafetensorsWriter() = default;
  Status flush();
  std::string path_;
  int fd_ = -1;
  std::vector<TensorInfo> infos_;
  uint64_t total_ = 0;
  uint64_t written_ = 0;
  uint64_t data_offset_ = 0;
  std::vector<uint8_t> buf_;
  size_t buf_used_ = 0;
};

// Serializes the JSON header for `tensors` laid out back to back in the given order.
std::string safetensors_header_json(const std::vector<TensorInfo>& tensors,
                                    const std::map<std::string, std::string>& metadata);

}  // namespace gptoss
