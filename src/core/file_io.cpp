#include "core/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

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

Status fsync_path(const std::string& path, bool is_dir) {
  int fd = ::open(path.c_str(), (is_dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return Error("{}: cannot open for fsync: {}", path, std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Error("{}: fsync failed: {}", path, std::strerror(err));
  return {};
}

Result<std::string> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Error("{}: cannot open file", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return Error("{}: read error", path);
  return ss.str();
}

namespace {
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};
}  // namespace

Result<std::string> read_regular_file(const std::string& path, uint64_t max_bytes) {
  Fd f{::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC)};
  if (f.fd < 0) return Error("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st{};
  if (::fstat(f.fd, &st) != 0) return Error("{}: cannot stat: {}", path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return Error("{}: not a regular file", path);
  if (uint64_t(st.st_size) > max_bytes)
    return Error("{}: {} bytes, more than the {} bytes allowed for this file", path, uint64_t(st.st_size), max_bytes);
  // Read at most max_bytes + 1: a file growing while read is caught, never followed without bound.
  std::string out(size_t(st.st_size), '\0');
  size_t have = 0;
  for (;;) {
    if (have == out.size()) {
      if (out.size() > max_bytes) return Error("{}: grew past the {} bytes allowed while being read", path, max_bytes);
      out.resize(std::min<uint64_t>(max_bytes + 1, std::max<uint64_t>(out.size() * 2, 4096)));
    }
    const ssize_t r = ::read(f.fd, out.data() + have, out.size() - have);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Error("{}: read failed: {}", path, std::strerror(errno));
    }
    if (r == 0) break;
    have += size_t(r);
  }
  out.resize(have);
  return out;
}

}  // namespace gptoss
