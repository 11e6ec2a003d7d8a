// Small POSIX file helpers: write helpers shared by the streaming writers (safetensors, Orbax), and the
// reader for files that come from users (configs, indexes, manifests, tokenizer files).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/status.h"

namespace gptoss {

// Size caps for files read whole into memory. config.json, the index and the manifest are a few KB to a
// few MB for every published model; tokenizer.json is 27 MB for o200k_harmony.
inline constexpr uint64_t kMaxJsonFileBytes = 64ull << 20;
inline constexpr uint64_t kMaxTokenizerFileBytes = 256ull << 20;

// Writes all n bytes to fd (retrying short writes and EINTR); `path` names the file in errors.
Status write_all(int fd, const uint8_t* p, size_t n, const std::string& path);

// fsync through a fresh descriptor: on Linux it flushes the file's (or folder's) dirty pages no
// matter which descriptor wrote them.
Status fsync_path(const std::string& path, bool is_dir);

// The whole file as bytes, whatever kind of file it is (a pipe or /dev/stdin included): for inputs the
// user names as a stream (conversations, token lists).
Result<std::string> read_file(const std::string& path);

// The whole file as bytes, only if it is a regular file (symlinks followed) of at most max_bytes. The
// check is made on the opened descriptor, and the open does not block (O_NONBLOCK), so a FIFO,
// /dev/zero or a directory fails at once instead of hanging or filling memory.
Result<std::string> read_regular_file(const std::string& path, uint64_t max_bytes);

}  // namespace gptoss
