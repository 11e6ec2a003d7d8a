#include "convert/output_sink.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "convert/orbax_writer.h"

namespace gptoss {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

Status write_file_synced(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Error("{}: cannot create: {}", path, std::strerror(errno));
  const char* p = text.data();
  size_t n = text.size();
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      int e = errno;
      ::close(fd);
      return Error("{}: write failed: {}", path, std::strerror(e));
    }
    p += w;
    n -= size_t(w);
  }
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    return Error("{}: fsync failed: {}", path, std::strerror(e));
  }
  if (::close(fd) != 0) return Error("{}: close failed: {}", path, std::strerror(errno));
  return {};
}

namespace {

std::string hex64(uint64_t v) { return fmt::format("{:016x}", v); }

class SafetensorsSink final : public OutputSink {
 public:
  SafetensorsSink(std::string dir, SafetensorsSinkOptions opts) : dir_(std::move(dir)), opts_(std::move(opts)) {}

  Status begin(const std::vector<TensorDecl>& tensors) override {
    decls_ = tensors;
    // Greedy packing in declaration order, so the engine reads the files front to back.
    uint64_t cur = 0;
    for (size_t i = 0; i < decls_.size(); ++i) {
      uint64_t n = uint64_t(numel(decls_[i])) * dtype_size(decls_[i].dtype);
      if (shards_.empty() || (cur + n > opts_.max_shard_bytes && cur > 0)) {
        shards_.push_back({});
        cur = 0;
      }
      if (shards_.back().first_tensor == SIZE_MAX) shards_.back().first_tensor = i;
      shards_.back().tensor_count++;
      shards_.back().bytes += n;
      cur += n;
    }
    if (shards_.empty()) shards_.push_back({});
    for (size_t s = 0; s < shards_.size(); ++s)
      shards_[s].file = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards_.size());
    return open_shard(0);
  }

  Status append(const void* data, size_t n) override {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    while (n > 0) {
      if (shard_ >= shards_.size()) return Error("{}: more bytes than declared", dir_);
      const uint64_t left = shards_[shard_].bytes - shard_written_;
      const size_t k = size_t(std::min<uint64_t>(left, n));
      if (k > 0) GPTOSS_TRY(writer_->append(p, k));
      shard_written_ += k;
      p += k;
      n -= k;
      if (shard_written_ == shards_[shard_].bytes) GPTOSS_TRY(next_shard());
    }
    return {};
  }

  Status finish(const std::vector<uint64_t>& checksums) override {
    while (shard_ < shards_.size()) {
      if (shard_written_ != shards_[shard_].bytes)
        return Error("{}: {} of {} bytes written", shards_[shard_].file, shard_written_, shards_[shard_].bytes);
      GPTOSS_TRY(next_shard());
    }
    ojson wm = ojson::object();
    uint64_t total = 0;
    ojson list = ojson::array();
    for (const Shard& s : shards_) {
      for (size_t k = 0; k < s.infos.size(); ++k) {
        const TensorInfo& t = s.infos[k];
        wm[t.name] = s.file;
        total += t.nbytes();
        const size_t gi = s.first_tensor + k;
        list.push_back({{"name", t.name},
                        {"file", s.file},
                        {"dtype", dtype_name(t.dtype)},
                        {"shape", t.shape},
                        {"offset", s.data_offset + t.begin},
                        {"nbytes", t.nbytes()},
                        {"xxh3", gi < checksums.size() ? hex64(checksums[gi]) : ""}});
      }
    }
    ojson index = {{"metadata", {{"total_size", total}}}, {"weight_map", wm}};
    GPTOSS_TRY(write_file_synced(dir_ + "/model.safetensors.index.json", index.dump(2) + "\n"));
    if (opts_.manifest) {
      ojson m = *opts_.manifest;
      m["total_bytes"] = total;
      m["tensors"] = list;
      GPTOSS_TRY(write_file_synced(dir_ + "/gptoss.json", m.dump(1) + "\n"));
    }
    return {};
  }

  size_t files_written() const override { return shards_.size(); }

 private:
  struct Shard {
    std::string file;
    size_t first_tensor = SIZE_MAX;
    size_t tensor_count = 0;
    uint64_t bytes = 0;
    uint64_t data_offset = 0;
    std::vector<TensorInfo> infos;
  };
  static int64_t numel(const TensorDecl& d) {
    int64_t n = 1;
    for (int64_t x : d.shape) n *= x;
    return n;
  }

  Status open_shard(size_t s) {
    shard_ = s;
    shard_written_ = 0;
    if (s >= shards_.size()) return {};
    Shard& sh = shards_[s];
    std::vector<TensorDecl> decls;
    if (sh.first_tensor != SIZE_MAX)
      decls.assign(decls_.begin() + ptrdiff_t(sh.first_tensor),
                   decls_.begin() + ptrdiff_t(sh.first_tensor + sh.tensor_count));
    GPTOSS_ASSIGN(writer_, SafetensorsWriter::create(dir_ + "/" + sh.file, std::move(decls), {{"format", "pt"}}));
    sh.infos = writer_->tensors();
    sh.data_offset = writer_->data_offset();
    if (sh.bytes == 0) return next_shard();
    return {};
  }

  Status next_shard() {
    GPTOSS_TRY(writer_->finish());
    writer_.reset();
    return open_shard(shard_ + 1);
  }

  std::string dir_;
  SafetensorsSinkOptions opts_;
  std::vector<TensorDecl> decls_;
  std::vector<Shard> shards_;
  size_t shard_ = 0;
  uint64_t shard_written_ = 0;
  std::unique_ptr<SafetensorsWriter> writer_;
};

class OrbaxSink final : public OutputSink {
 public:
  explicit OrbaxSink(std::string dir) : dir_(std::move(dir)) {}
  Status begin(const std::vector<TensorDecl>& tensors) override {
    const std::string params = dir_ + "/jax_params";
    std::error_code ec;
    fs::create_directories(params, ec);
    if (ec) return Error("{}: cannot create: {}", params, ec.message());
    GPTOSS_ASSIGN(writer_, OrbaxWriter::create(params, tensors));
    return {};
  }
  Status append(const void* data, size_t n) override { return writer_->append(data, n); }
  Status finish(const std::vector<uint64_t>&) override { return writer_->finish(); }
  size_t files_written() const override { return 1; }

 private:
  std::string dir_;
  std::unique_ptr<OrbaxWriter> writer_;
};

}  // namespace

std::unique_ptr<OutputSink> make_safetensors_sink(std::string dir, SafetensorsSinkOptions opts) {
  return std::make_unique<SafetensorsSink>(std::move(dir), std::move(opts));
}

std::unique_ptr<OutputSink> make_orbax_sink(std::string dir) { return std::make_unique<OrbaxSink>(std::move(dir)); }

}  // namespace gptoss
