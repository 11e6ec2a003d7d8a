// Small POSIX write helpers shared by the streaming writers (safetensors, Orbax).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/status.h"

namespace gptoss {

// Writes all n bytes to fd (retrying short writes and EINTR); `path` names the file in errors.
Status write_all(int fd, const uint8_t* p, size_t n, const std::string& path);

// fsync through a fresh descriptor: on Linux it flushes the file's (or folder's) dirty pages no
// matter which descriptor wrote them.
Status fsync_path(const std::string& path, bool is_dir);

// The whole file as bytes (configs, tokenizer files, conversations).
Result<std::string> read_file(const std::string& path);

}  // namespace gptoss
