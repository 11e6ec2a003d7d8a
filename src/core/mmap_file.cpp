#include "core/mmap_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace gptoss {

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    this->~MappedFile();
    data_ = o.data_;
    size_ = o.size_;
    path_ = std::move(o.path_);
    fd_ = o.fd_;
    o.data_ = nullptr;
    o.size_ = 0;
    o.fd_ = -1;
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (data_ && size_) munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Result<MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return Error("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st{};
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return Error("{}: cannot stat: {}", path, std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Error("{}: not a regular file", path);
  }
  MappedFile m;
  m.path_ = path;
  m.size_ = size_t(st.st_size);
  if (m.size_ > 0) {
    void* p = mmap(nullptr, m.size_, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      return Error("{}: mmap failed: {}", path, std::strerror(e));
    }
    m.data_ = static_cast<const uint8_t*>(p);
  }
  m.fd_ = fd;
  return m;
}

Status MappedFile::check_size() const {
  if (fd_ < 0) return {};
  struct stat st{};
  if (fstat(fd_, &st) != 0) return Error("{}: cannot stat: {}", path_, std::strerror(errno));
  if (uint64_t(st.st_size) < size_)
    return Error("{}: file shrank while being read (now {} bytes, was {})", path_, uint64_t(st.st_size), size_);
  return {};
}

namespace {
void advise(const uint8_t* base, size_t size, size_t offset, size_t len, int what) {
  if (!base || offset >= size) return;
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  size_t begin = offset & ~(page - 1);
  size_t end = std::min(size, offset + len);
  madvise(const_cast<uint8_t*>(base) + begin, end - begin, what);
}
}  // namespace

void MappedFile::advise_sequential(size_t offset, size_t len) const {
  advise(data_, size_, offset, len, MADV_SEQUENTIAL);
}
void MappedFile::advise_willneed(size_t offset, size_t len) const {
  advise(data_, size_, offset, len, MADV_WILLNEED);
}
void MappedFile::advise_dontneed(size_t offset, size_t len) const {
  advise(data_, size_, offset, len, MADV_DONTNEED);
}

}  // namespace gptoss
