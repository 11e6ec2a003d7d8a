// Reading untrusted files: regular files only, size caps, and the SIGBUS guard for mappings of files
// that shrink while being read (issue 17, items 5 and 8).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "core/fault_guard.h"
#include "core/file_io.h"
#include "core/mmap_file.h"
#include "format/safetensors.h"

using namespace gptoss;
namespace fs = std::filesystem;

namespace {
struct TempDir {
  fs::path dir = fs::temp_directory_path() / ("gptoss_file_io_test_" + std::to_string(::getpid()));
  TempDir() {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~TempDir() { fs::remove_all(dir); }
};
}  // namespace

TEST(FileIo, ReadRegularFileRefusesSpecialFilesAtOnce) {
  TempDir t;
  const std::string fifo = (t.dir / "fifo").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // A FIFO with no writer: a plain open would block forever.
  auto r = read_regular_file(fifo, 1024);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not a regular file"), std::string::npos) << r.status().message();
  r = read_regular_file("/dev/zero", 1024);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not a regular file"), std::string::npos);
  r = read_regular_file(t.dir.string(), 1024);
  ASSERT_FALSE(r.ok());
  auto m = MappedFile::open(fifo);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("not a regular file"), std::string::npos) << m.status().message();
}

TEST(FileIo, ReadRegularFileCapsTheSize) {
  TempDir t;
  const fs::path p = t.dir / "f";
  std::ofstream(p) << std::string(100, 'a');
  auto r = read_regular_file(p.string(), 100);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->size(), 100u);
  r = read_regular_file(p.string(), 99);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("99"), std::string::npos) << r.status().message();
  fs::create_symlink("/dev/zero", t.dir / "zero");  // a symlink is followed, and the target judged
  EXPECT_FALSE(read_regular_file((t.dir / "zero").string(), 1 << 20).ok());
}

TEST(FaultGuard, TruncatedMappingFailsInsteadOfSigbus) {
  TempDir t;
  const fs::path p = t.dir / "shard";
  const size_t n = size_t(4) * size_t(sysconf(_SC_PAGESIZE));
  std::ofstream(p, std::ios::binary) << std::string(n, 'x');
  auto m = MappedFile::open(p.string());
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->check_size().ok());
  std::vector<uint8_t> dst(n);
  ASSERT_TRUE(guarded_memcpy(dst.data(), m->data(), n));
  // Another writer truncates the file under the mapping: reading the lost pages would raise SIGBUS.
  ASSERT_EQ(::truncate(p.c_str(), 0), 0);
  EXPECT_FALSE(guarded_memcpy(dst.data(), m->data() + n / 2, n / 2));
  auto s = m->check_size();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("shrank while being read"), std::string::npos) << s.message();
  // The guard is reusable after a fault (the signal mask was restored), and nested calls work.
  EXPECT_FALSE(guarded_memcpy(dst.data(), m->data(), 16));
  int calls = 0;
  EXPECT_TRUE(sigbus_guarded([&] { calls += guarded_memcpy(dst.data(), dst.data() + 1, 1) ? 1 : 0; }));
  EXPECT_EQ(calls, 1);
  // The writer's buffered append reads through the guard: an error, not a crash.
  auto w = SafetensorsWriter::create((t.dir / "out.safetensors").string(), {{"a", DType::U8, {16}}});
  ASSERT_TRUE(w.ok());
  Status a = (*w)->append(m->data(), 16);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.message().find("shrank"), std::string::npos) << a.message();
}
