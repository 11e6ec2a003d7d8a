// Small POSIX write helpers shared by the streaming writers (safetensors, Orbax).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/status.h"

namespace gptoss {

// Writes all n bytes to fd (retrying short writes and EINTR); `path` names the file in errors.
Status write_all(int fd, const uint8_t* p, size_t n, const std::string& path);

}  // namespace gptoss
