#include "core/file_io.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace gptoss {

Status write_all(int fd, const uint8_t* p, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Error("{}: write failed: {}", path, std::strerror(errno));
    }
    p += w;
    n -= size_t(w);
  }
  return {};
}

}  // namespace gptoss
