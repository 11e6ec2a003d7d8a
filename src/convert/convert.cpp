#include "convert/convert.h"

#include "core/file_io.h"

#include <signal.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "convert/git_lfs.h"
#include "convert/output_sink.h"
#include "convert/tensor_codec.h"
#include "core/fault_guard.h"
#include "core/mxfp4.h"
#include "core/progress.h"
#include "format/checkpoint.h"

namespace gptoss {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

const char* format_name(OutputFormat f) {
  switch (f) {
    case OutputFormat::Native: return "native";
    case OutputFormat::Safetensors: return "safetensors";
    case OutputFormat::Orbax: return "orbax";
  }
  return "?";
}

const char* output_dtype_name(OutputDType d) {
  switch (d) {
    case OutputDType::Auto: return "auto";
    case OutputDType::Mxfp4: return "mxfp4";
    case OutputDType::BF16: return "bf16";
    case OutputDType::F32: return "f32";
  }
  return "?";
}

namespace {

constexpr size_t kChunkBytes = 8u << 20;  // one unit of work: small enough to keep RSS flat
constexpr size_t kPoolBuffers = 3;        // producer fills one while the writer drains another
constexpr size_t kMaxQueued = 4;          // chunks in flight (zero-copy ones hold mapped pages)

fs::path strip_slash(const std::string& p) {
  fs::path x = fs::path(p).lexically_normal();
  if (!x.has_filename() && x.has_parent_path()) x = x.parent_path();
  return x;
}

// ---- the plan: one job per output tensor -----------------------------------------------------

enum class JobKind : uint8_t { Copy, Cast, Dequant };

struct InputRange {
  const MappedFile* file;
  size_t offset, len;
};

struct Job {
  TensorDecl out;
  JobKind kind = JobKind::Copy;
  const TensorData* src = nullptr;     // Copy / Cast: the bytes; Dequant: the blocks
  const TensorData* scales = nullptr;  // Dequant only
  uint64_t out_bytes = 0;
};

InputRange range_of(const Checkpoint& ck, const TensorData& t, size_t off, size_t len) {
  const MappedFile& f = ck.files()[t.file_index]->file();
  return {&f, size_t(t.bytes.data() - f.data()) + off, len};
}

uint64_t decl_bytes(const TensorDecl& d) {
  uint64_t n = dtype_size(d.dtype);
  for (int64_t x : d.shape) n *= uint64_t(x);
  return n;
}

Result<std::vector<Job>> plan_jobs(const Checkpoint& ck, OutputFormat fmt, OutputDType dt) {
  const ExpertStorage out_experts = dt == OutputDType::Mxfp4 ? ExpertStorage::Mxfp4 : ExpertStorage::Dense;
  const DType dense = dt == OutputDType::F32 ? DType::F32 : DType::BF16;
  std::vector<Job> jobs;
  for (const TensorSpec& spec : model_tensor_specs(ck.config(), out_experts)) {
    Job j;
    j.out.name = spec.name;
    j.out.shape = spec.shape;
    const bool dense_expert = spec.role == TensorRole::GateUpDense || spec.role == TensorRole::DownDense;
    if (dense_expert && ck.experts() == ExpertStorage::Mxfp4) {
      j.kind = JobKind::Dequant;
      j.src = ck.find(spec.name + "_blocks");
      j.scales = ck.find(spec.name + "_scales");
      j.out.dtype = dense;
      if (!j.src || !j.scales) return Error("{}: missing {}_blocks/_scales", ck.dir(), spec.name);
    } else {
      j.src = ck.find(spec.name);
      if (!j.src) return Error("{}: missing tensor '{}'", ck.dir(), spec.name);
      if (j.src->dtype == DType::U8) {
        j.out.dtype = DType::U8;
      } else if (fmt == OutputFormat::Native && dt != OutputDType::F32 && !dense_expert) {
        // Native keeps attention/router/embedding tensors as stored (bf16 in every published checkpoint).
        j.out.dtype = j.src->dtype == DType::F16 ? DType::BF16 : j.src->dtype;
      } else {
        j.out.dtype = dense;
      }
      j.kind = j.out.dtype == j.src->dtype ? JobKind::Copy : JobKind::Cast;
    }
    j.out_bytes = decl_bytes(j.out);
    jobs.push_back(std::move(j));
  }
  return jobs;
}

// ---- the pipeline ------------------------------------------------------------------------------

struct Chunk {
  size_t tensor = 0;
  const uint8_t* data = nullptr;
  size_t n = 0;
  int buffer = -1;  // pool slot, -1 for a zero-copy view into the input mapping
  std::vector<InputRange> release;  // input pages to drop once the chunk is written
};

// Bounded hand-off between the producer and the writer, with the buffer pool; abort() wakes both.
class Channel {
 public:
  explicit Channel(size_t buffer_bytes) {
    for (size_t i = 0; i < kPoolBuffers; ++i) {
      buffers_.emplace_back(buffer_bytes);
      free_.push_back(int(i));
    }
  }
  int acquire() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return aborted_ || !free_.empty(); });
    if (aborted_) return -1;
    int b = free_.back();
    free_.pop_back();
    return b;
  }
  void release_buffer(int b) {
    if (b < 0) return;
    std::lock_guard<std::mutex> l(mu_);
    free_.push_back(b);
    cv_.notify_all();
  }
  uint8_t* buffer(int b) { return buffers_[size_t(b)].data(); }
  size_t buffer_size() const { return buffers_[0].size(); }
  bool push(Chunk c) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return aborted_ || q_.size() < kMaxQueued; });
    if (aborted_) return false;
    q_.push_back(std::move(c));
    cv_.notify_all();
    return true;
  }
  // False when the producer closed the channel and everything was taken, or on abort.
  bool pop(Chunk& c) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return aborted_ || closed_ || !q_.empty(); });
    if (aborted_ || q_.empty()) return false;
    c = std::move(q_.front());
    q_.pop_front();
    cv_.notify_all();
    return true;
  }
  void close() {
    std::lock_guard<std::mutex> l(mu_);
    closed_ = true;
    cv_.notify_all();
  }
  void abort() {
    std::lock_guard<std::mutex> l(mu_);
    aborted_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::vector<uint8_t>> buffers_;
  std::vector<int> free_;
  std::deque<Chunk> q_;
  bool closed_ = false, aborted_ = false;
};

bool cancelled(const std::atomic<bool>* c) { return c && c->load(std::memory_order_relaxed); }

// Walks the jobs and emits chunks. `emit` returns false when the writer gave up.
class Producer {
 public:
  Producer(const Checkpoint& ck, const std::vector<Job>& jobs, Channel& ch, const std::atomic<bool>* cancel,
           std::function<bool(Chunk&&)> emit)
      : ck_(ck), jobs_(jobs), ch_(ch), cancel_(cancel), emit_(std::move(emit)), checksums_(jobs.size()) {}

  Status run() {
    XXH3_state_t* st = XXH3_createState();
    if (!st) return Error("out of memory");
    Status s;
    for (size_t i = 0; i < jobs_.size() && s.ok(); ++i) {
      s = check_inputs(jobs_[i]);
      if (!s.ok()) break;
      XXH3_64bits_reset(st);
      s = produce(i, st);
      checksums_[i] = XXH3_64bits_digest(st);
      // A copied tensor's output checksum is its input's: compare it with a native input's manifest.
      if (s.ok() && jobs_[i].kind == JobKind::Copy) s = check_checksum(*jobs_[i].src, checksums_[i]);
    }
    XXH3_freeState(st);
    return s;
  }
  const std::vector<uint64_t>& checksums() const { return checksums_; }

 private:
  const MappedFile& file_of(const TensorData& t) const { return ck_.files()[t.file_index]->file(); }

  // After a read fault: the file that shrank, named (or a generic message if none did).
  Status fault_error(const TensorData& t) const {
    GPTOSS_TRY(ck_.check_files_unchanged());
    return Error("{}: tensor '{}': read fault", file_of(t).path(), t.spec.name);
  }

  Status check_checksum(const TensorData& t, uint64_t got) const {
    const ChecksummedTensor* c = ck_.checksum_of(t.spec.name);
    if (!c || c->xxh3 == got) return {};
    return Error("{}: tensor '{}': checksum {:016x}, manifest says {:016x} (the input is corrupted; nothing written)",
                 file_of(t).path(), t.spec.name, got, c->xxh3);
  }

  // Before a tensor is read: its files are still as long as their headers said (a truncated file would
  // fault), and for a native input the tensors that are not copied verbatim match their checksums.
  Status check_inputs(const Job& j) const {
    for (const TensorData* t : {j.src, j.scales}) {
      if (!t) continue;
      GPTOSS_TRY(file_of(*t).check_size());
      if (j.kind == JobKind::Copy || !ck_.checksum_of(t->spec.name)) continue;
      uint64_t got = 0;
      if (!xxh3_of_mapped(t->bytes, got, nullptr, &file_of(*t))) return fault_error(*t);
      GPTOSS_TRY(check_checksum(*t, got));
    }
    return {};
  }

  Status send(Chunk&& c, XXH3_state_t* st, const TensorData& src) {
    if (cancelled(cancel_)) return Error("interrupted");
    struct Args {
      XXH3_state_t* st;
      const uint8_t* data;
      size_t n;
    } a{st, c.data, c.n};
    if (!run_sigbus_guarded([](void* v) {
          auto* x = static_cast<Args*>(v);
          XXH3_64bits_update(x->st, x->data, x->n);
        }, &a))
      return fault_error(src);
    if (!emit_(std::move(c))) return Error("writer stopped");
    return {};
  }

  Status produce(size_t ti, XXH3_state_t* st) {
    const Job& j = jobs_[ti];
    switch (j.kind) {
      case JobKind::Copy: {
        for (size_t off = 0; off < j.src->bytes.size(); off += kChunkBytes) {
          const size_t n = std::min(kChunkBytes, j.src->bytes.size() - off);
          Chunk c{ti, j.src->bytes.data() + off, n, -1, {range_of(ck_, *j.src, off, n)}};
          GPTOSS_TRY(send(std::move(c), st, *j.src));
        }
        if (j.src->bytes.empty()) GPTOSS_TRY(send(Chunk{ti, nullptr, 0, -1, {}}, st, *j.src));
        return {};
      }
      case JobKind::Cast: {
        const size_t in_es = dtype_size(j.src->dtype), out_es = dtype_size(j.out.dtype);
        const size_t total = j.src->bytes.size() / in_es;
        const size_t per = ch_.buffer_size() / std::max(in_es, out_es);
        for (size_t e0 = 0; e0 < total; e0 += per) {
          const size_t n = std::min(per, total - e0);
          const int b = ch_.acquire();
          if (b < 0) return Error("writer stopped");
          uint8_t* dst = ch_.buffer(b);
          // Guarded: the input is a mapping (the lambda and convert_floats own nothing with a destructor).
          const uint8_t* src = j.src->bytes.data() + e0 * in_es;
          if (!sigbus_guarded([&] { convert_floats(src, j.src->dtype, dst, j.out.dtype, n); })) {
            ch_.release_buffer(b);
            return fault_error(*j.src);
          }
          Chunk c{ti, dst, n * out_es, b, {range_of(ck_, *j.src, e0 * in_es, n * in_es)}};
          GPTOSS_TRY(send(std::move(c), st, *j.src));
        }
        return {};
      }
      case JobKind::Dequant: {
        // blocks [E, rows, cols/32, 16] -> out [E, cols, rows]; chunks are column ranges of one expert.
        const int64_t E = j.src->spec.shape[0], rows = j.src->spec.shape[1], cols = j.src->spec.shape[2] * 32;
        const size_t es = dtype_size(j.out.dtype);
        const size_t blk_e = size_t(rows) * size_t(cols / 32) * kMxfp4BlockBytes, sc_e = size_t(rows * (cols / 32));
        const int64_t step =
            std::max<int64_t>(32, int64_t(ch_.buffer_size() / (size_t(rows) * es)) / 32 * 32);
        for (int64_t e = 0; e < E; ++e) {
          for (int64_t c0 = 0; c0 < cols; c0 += step) {
            const int64_t c1 = std::min(cols, c0 + step);
            const int b = ch_.acquire();
            if (b < 0) return Error("writer stopped");
            uint8_t* dst = ch_.buffer(b);
            if (!sigbus_guarded([&] {
                  mxfp4_to_dense_transposed(j.src->bytes.data() + size_t(e) * blk_e,
                                            j.scales->bytes.data() + size_t(e) * sc_e, rows, cols, c0, c1,
                                            j.out.dtype, dst);
                })) {
              ch_.release_buffer(b);
              return fault_error(*j.src);
            }
            Chunk c{ti, dst, size_t(c1 - c0) * size_t(rows) * es, b, {}};
            if (c1 == cols)
              c.release = {range_of(ck_, *j.src, size_t(e) * blk_e, blk_e),
                           range_of(ck_, *j.scales, size_t(e) * sc_e, sc_e)};
            GPTOSS_TRY(send(std::move(c), st, *j.src));
          }
        }
        return {};
      }
    }
    return {};
  }

  const Checkpoint& ck_;
  const std::vector<Job>& jobs_;
  Channel& ch_;
  const std::atomic<bool>* cancel_;
  std::function<bool(Chunk&&)> emit_;
  std::vector<uint64_t> checksums_;
};

Status write_chunk(OutputSink& sink, Chunk& c, Progress& progress) {
  if (c.n) GPTOSS_TRY(sink.append(c.data, c.n));
  for (const InputRange& r : c.release) r.file->advise_dontneed(r.offset, r.len);
  progress.add(c.n);
  return {};
}

// Runs producer and writer (on two threads unless threads == 1); returns the per-tensor checksums.
Result<std::vector<uint64_t>> run_pipeline(const Checkpoint& ck, const std::vector<Job>& jobs, OutputSink& sink,
                                           Progress& progress, const ConvertOptions& opts) {
  size_t buf = kChunkBytes;
  for (const Job& j : jobs)  // a dequant chunk holds at least 32 full output rows
    if (j.kind == JobKind::Dequant) buf = std::max(buf, size_t(32) * size_t(j.src->spec.shape[1]) * dtype_size(j.out.dtype));
  Channel ch(buf);
  if (opts.threads <= 1) {
    Status ws;
    Producer p(ck, jobs, ch, opts.cancel, [&](Chunk&& c) {
      ws = write_chunk(sink, c, progress);
      ch.release_buffer(c.buffer);
      return ws.ok();
    });
    Status ps = p.run();
    if (!ws.ok() || !ps.ok()) GPTOSS_TRY(ck.check_files_unchanged());
    if (!ws.ok()) return ws;
    if (!ps.ok()) return ps;
    return p.checksums();
  }
  Producer p(ck, jobs, ch, opts.cancel, [&](Chunk&& c) { return ch.push(std::move(c)); });
  Status ps;
  std::thread worker([&] {
    try {
      ps = p.run();
    } catch (const std::exception& e) {
      ps = Error("conversion worker failed: {}", e.what());
    }
    if (ps.ok()) ch.close();
    else ch.abort();
  });
  Status ws;
  Chunk c;
  while (ch.pop(c)) {
    if (cancelled(opts.cancel)) ws = Error("interrupted");
    else ws = write_chunk(sink, c, progress);
    ch.release_buffer(c.buffer);
    if (!ws.ok()) {
      ch.abort();
      break;
    }
  }
  worker.join();
  if (!ws.ok() || !ps.ok()) GPTOSS_TRY(ck.check_files_unchanged());  // a shrunken input explains either failure
  if (!ws.ok()) return ws;
  if (!ps.ok()) return ps;
  return p.checksums();
}

// ---- output directory handling -----------------------------------------------------------------

// What --force may replace: only a directory that looks like an earlier conversion's output (it has
// gptoss.json or config.json). A regular file, a symlink (even to such a directory) or any other
// directory is refused, untouched. Returns false with no error when nothing is at `out`.
Result<bool> existing_output(const fs::path& out, bool force) {
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(out, ec);
  if (ec || !fs::exists(st)) return false;
  if (!force) return Error("{}: already exists (use --force to replace it)", out.string());
  if (fs::is_symlink(st))
    return Error("{}: is a symbolic link; --force replaces only an earlier output directory", out.string());
  if (!fs::is_directory(st))
    return Error("{}: exists and is not a directory; --force replaces only an earlier output directory", out.string());
  if (!fs::exists(out / "gptoss.json", ec) && !fs::exists(out / "config.json", ec))
    return Error("{}: exists and has no gptoss.json or config.json, so it is not an earlier output; --force will not "
                 "replace it",
                 out.string());
  return true;
}

// A temporary sibling `.NAME.tmp-PID`, removed on any failure unless commit() ran.
class TempDir {
 public:
  ~TempDir() {
    if (!path_.empty() && !committed_) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  Status create(const fs::path& output) {
    const fs::path parent = output.has_parent_path() ? output.parent_path() : fs::path(".");
    const std::string prefix = "." + output.filename().string() + ".tmp-";
    std::error_code ec;
    // Runs killed with -9 leave `.NAME.tmp-PID`; remove those whose process is gone.
    if (fs::is_directory(parent, ec)) {
      for (const auto& e : fs::directory_iterator(parent, ec)) {
        const std::string n = e.path().filename().string();
        if (!n.starts_with(prefix)) continue;
        const long pid = std::strtol(n.c_str() + prefix.size(), nullptr, 10);
        if (pid > 0 && ::kill(pid_t(pid), 0) != 0 && errno == ESRCH) fs::remove_all(e.path(), ec);
      }
    }
    fs::create_directories(parent, ec);
    if (ec) return Error("{}: cannot create: {}", parent.string(), ec.message());
    path_ = parent / (prefix + std::to_string(::getpid()));
    fs::remove_all(path_, ec);
    if (!fs::create_directory(path_, ec) || ec)
      return Error("{}: cannot create: {}", path_.string(), ec ? ec.message() : "exists");
    return {};
  }
  // fsyncs the tree, renames it onto `output` (replacing an old one if `force`), fsyncs the parent.
  Status commit(const fs::path& output, bool force) {
    GPTOSS_TRY(fsync_path(path_.string(), true));
    std::error_code ec;
    for (const auto& e : fs::recursive_directory_iterator(path_, ec))
      if (e.is_directory()) GPTOSS_TRY(fsync_path(e.path().string(), true));
    fs::path old;
    GPTOSS_ASSIGN(const bool replace, existing_output(output, force));  // checked again: it may have appeared since
    if (replace) {
      old = output.parent_path() / ("." + output.filename().string() + ".old-" + std::to_string(::getpid()));
      fs::rename(output, old, ec);
      if (ec) return Error("{}: cannot move the old output aside: {}", output.string(), ec.message());
    }
    fs::rename(path_, output, ec);
    if (ec) return Error("{}: rename from {} failed: {}", output.string(), path_.string(), ec.message());
    committed_ = true;
    if (!old.empty()) fs::remove_all(old, ec);
    return fsync_path(output.has_parent_path() ? output.parent_path().string() : ".", true);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  bool committed_ = false;
};

bool is_within(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i)
    if (i == inner.end() || *i != *o) return false;
  return true;
}

Status copy_side_files(const Checkpoint& ck, const fs::path& dst) {
  static const char* kFiles[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                 "generation_config.json", "chat_template.jinja"};
  for (const char* f : kFiles) {
    for (const fs::path& d : {fs::path(ck.dir()), fs::path(ck.config_dir())}) {
      std::error_code ec;
      if (!fs::exists(d / f, ec)) continue;
      // Regular files of bounded size only (tokenizer.json, the largest, is 27 MB): a FIFO or /dev/zero
      // under one of these names is an error, not a hang.
      GPTOSS_ASSIGN(std::string text, read_regular_file((d / f).string(), kMaxTokenizerFileBytes));
      GPTOSS_TRY(write_file_synced((dst / f).string(), text));
      break;
    }
  }
  return {};
}

Result<ConvertSummary> convert_impl(const ConvertOptions& opts) {
  const auto t0 = std::chrono::steady_clock::now();
  if (opts.max_layers == 0 || opts.max_layers < -1) return Error("--layers must be at least 1, got {}", opts.max_layers);
  CheckpointOptions co;
  co.max_layers = opts.max_layers;
  GPTOSS_ASSIGN(Checkpoint ck, Checkpoint::open(strip_slash(opts.model_path).string(), co));

  // dtype
  OutputDType dt = opts.dtype;
  const DType in_expert = ck.expert_dtype();
  if (dt == OutputDType::Auto) {
    if (opts.format == OutputFormat::Native && ck.experts() == ExpertStorage::Mxfp4) dt = OutputDType::Mxfp4;
    else if (opts.format == OutputFormat::Native && in_expert == DType::F32) dt = OutputDType::F32;
    else dt = OutputDType::BF16;
  }
  // MXFP4 output keeps blocks and scales as U8 tensors: the native format, or Orbax uint8 leaves for JAX
  // kernels that decode on the fly. An unquantized safetensors checkpoint with MXFP4 would be the native one.
  if (dt == OutputDType::Mxfp4 && opts.format == OutputFormat::Safetensors)
    return Error("--dtype mxfp4 is not available with --format safetensors (that would be the native format: use "
                 "--format native); --format safetensors writes bf16 or f32");
  if (dt == OutputDType::Mxfp4 && ck.experts() == ExpertStorage::Dense)
    return Error("{}: experts are stored dense ({}); quantizing to MXFP4 is not supported, use --dtype bf16 or f32",
                 ck.dir(), dtype_name(in_expert));

  GPTOSS_ASSIGN(std::vector<Job> jobs, plan_jobs(ck, opts.format, dt));

  // output path and safety checks
  const fs::path in_dir = fs::weakly_canonical(strip_slash(opts.model_path));
  fs::path out = opts.output.empty() ? fs::path(default_output_path(opts.model_path, opts.format, dt))
                                     : strip_slash(opts.output);
  // Resolve the parent only: a symlink at the output path itself must be seen (and refused), not followed.
  out = fs::absolute(out).lexically_normal();
  if (!out.has_filename()) out = out.parent_path();
  out = fs::weakly_canonical(out.parent_path()) / out.filename();
  if (is_within(in_dir, out) || is_within(out, in_dir))
    return Error("output {} overlaps the input {}; choose another --output", out.string(), in_dir.string());
  GPTOSS_TRY(existing_output(out, opts.force));

  TempDir tmp;
  GPTOSS_TRY(tmp.create(out));

  // sink
  std::unique_ptr<OutputSink> sink;
  if (opts.format == OutputFormat::Orbax) {
    sink = make_orbax_sink(tmp.path().string());
  } else {
    SafetensorsSinkOptions so;
    so.max_shard_bytes = opts.max_shard_bytes;
    if (opts.format == OutputFormat::Native) {
      so.manifest = std::make_unique<ojson>(ojson{{"format", "gptoss-native"},
                                                  {"version", 1},
                                                  {"source_layout", layout_name(ck.layout())},
                                                  {"dtype", output_dtype_name(dt)},
                                                  {"num_hidden_layers", ck.config().num_hidden_layers},
                                                  {"alignment", 64},
                                                  {"checksum", "xxh3-64"}});
    }
    sink = make_safetensors_sink(tmp.path().string(), std::move(so));
  }
  std::vector<TensorDecl> decls;
  uint64_t bytes_out = 0;
  for (const Job& j : jobs) {
    decls.push_back(j.out);
    bytes_out += j.out_bytes;
  }
  GPTOSS_TRY(sink->begin(decls));
  Progress progress("convert", bytes_out, opts.show_progress);
  GPTOSS_ASSIGN(std::vector<uint64_t> sums, run_pipeline(ck, jobs, *sink, progress, opts));
  progress.finish();
  GPTOSS_TRY(sink->finish(sums));

  // config and side files
  nlohmann::json cfg = ck.config().to_hf_json(dt == OutputDType::Mxfp4);
  if (dt == OutputDType::F32) cfg["torch_dtype"] = "float32";
  GPTOSS_TRY(write_file_synced((tmp.path() / "config.json").string(), cfg.dump(2) + "\n"));
  GPTOSS_TRY(copy_side_files(ck, tmp.path()));
  GPTOSS_TRY(write_lfs_attributes(tmp.path().string()));
  if (cancelled(opts.cancel)) return Error("interrupted");
  GPTOSS_TRY(tmp.commit(out, opts.force));

  ConvertSummary s;
  s.input_dir = ck.dir();
  s.output_dir = out.string();
  s.source_layout = layout_name(ck.layout());
  s.format = format_name(opts.format);
  s.dtype = output_dtype_name(dt);
  s.layers = ck.config().num_hidden_layers;
  s.tensors = jobs.size();
  s.files = sink->files_written();
  s.bytes_in = ck.tensor_bytes();
  s.bytes_out = bytes_out;
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  s.peak_rss = peak_rss_bytes();
  return s;
}

}  // namespace

std::string default_output_path(const std::string& model_path, OutputFormat f, OutputDType d) {
  std::string base = strip_slash(model_path).string();
  switch (f) {
    case OutputFormat::Native: return base + "-gptoss";
    case OutputFormat::Safetensors: return base + (d == OutputDType::F32 ? "-f32" : "-bf16");
    case OutputFormat::Orbax: return base + "-jax";
  }
  return base + "-out";
}

Result<ConvertSummary> convert_checkpoint(const ConvertOptions& opts) {
  // Filesystem calls and allocation may throw; keep every failure a Status (and the temp dir cleaned).
  try {
    return convert_impl(opts);
  } catch (const std::exception& e) {
    return Error("convert failed: {}", e.what());
  }
}

// ---- verification --------------------------------------------------------------------------------

Result<VerifySummary> verify_native(const std::string& dir_str, bool show_progress) {
  try {
    const auto t0 = std::chrono::steady_clock::now();
    const fs::path dir = strip_slash(dir_str);
    std::error_code ec;
    if (!fs::exists(dir / "gptoss.json", ec))
      return Error("{}: no gptoss.json manifest: not a native gptoss checkpoint", dir.string());
    GPTOSS_ASSIGN(Checkpoint ck, Checkpoint::open(dir.string()));
    VerifySummary s;
    for (const ChecksummedTensor& t : ck.checksummed()) s.bytes += t.bytes.size();
    s.tensors = ck.checksummed().size();
    Progress progress("verify", s.bytes, show_progress);
    GPTOSS_TRY(ck.verify_checksums(&progress));
    progress.finish();
    s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return s;
  } catch (const std::exception& e) {
    return Error("{}: verify failed: {}", dir_str, e.what());
  }
}

}  // namespace gptoss
