// A read-only memory-mapped file. Weights are used where they lie: the loader hands out pointers
// into the mapping, so resident memory is the pages actually touched.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "core/status.h"

namespace gptoss {

class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(MappedFile&& o) noexcept { *this = std::move(o); }
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  // Only regular files: the open does not block (O_NONBLOCK), so a FIFO fails at once.
  static Result<MappedFile> open(const std::string& path);

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }
  // Hint the kernel that [offset, offset+len) will be read sequentially / soon.
  void advise_sequential(size_t offset, size_t len) const;
  void advise_willneed(size_t offset, size_t len) const;
  // Drop [offset, offset+len) from this process's resident set (pages stay in the page cache).
  void advise_dontneed(size_t offset, size_t len) const;
  // Fails with "PATH shrank ..." when the file is now shorter than the mapping: reading the lost tail
  // would raise SIGBUS. The descriptor is kept open for this check (the same file even if renamed over).
  Status check_size() const;

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
  int fd_ = -1;
};

}  // namespace gptoss
