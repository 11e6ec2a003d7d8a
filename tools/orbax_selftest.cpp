// gptoss-orbax-selftest: writes an Orbax checkpoint of pseudo-random leaves with OrbaxWriter, so that
// Orbax itself can judge the result (tests/py/test_orbax_writer.py), and times the write.
//
//   gptoss-orbax-selftest --spec spec.json --out DIR [--seed N] [--max-chunk-bytes N] [--baseline FILE]
//
// spec.json: {"leaves": [{"name": "a.b", "dtype": "BF16", "shape": [2, 3]}, ...], "empty_dicts": ["c.d"]}.
// The bytes of all leaves, concatenated in declaration order, are the little-endian 64-bit words
// word[j] = splitmix64_mix(seed + (j + 1) * 0x9E3779B97F4A7C15), j = 0, 1, ..., the last word
// truncated; the Python side recomputes them with numpy. They are appended in pieces of varying
// size (1 byte to 3 MiB) so that appends cross chunk and leaf boundaries.
// --baseline FILE also writes the same bytes to one plain file (write + fsync) and times it.
// Prints one JSON line: {"bytes": N, "seconds": S, "mb_per_s": R, "baseline_mb_per_s": B}.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "convert/orbax_writer.h"

using namespace gptoss;
using json = nlohmann::json;

namespace {

constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ull;

uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Fills `out` with stream bytes [offset, offset + out.size()); offset is a multiple of 8.
void fill_stream(uint64_t seed, uint64_t offset, std::vector<uint8_t>& out) {
  uint64_t j = offset / 8;
  for (size_t i = 0; i < out.size(); i += 8, ++j) {
    const uint64_t w = splitmix64_mix(seed + (j + 1) * kGamma);
    uint8_t b[8];
    for (int k = 0; k < 8; ++k) b[k] = uint8_t(w >> (8 * k));
    std::memcpy(out.data() + i, b, std::min<size_t>(8, out.size() - i));
  }
}

Result<std::vector<TensorDecl>> parse_spec(const json& spec) {
  std::vector<TensorDecl> leaves;
  if (!spec.contains("leaves") || !spec["leaves"].is_array()) return Error("spec: expected a \"leaves\" array");
  for (const auto& l : spec["leaves"]) {
    auto dt = dtype_from_string(l.value("dtype", ""));
    if (!dt) return Error("spec: leaf {}: unknown dtype", l.dump());
    leaves.push_back({l.at("name").get<std::string>(), *dt, l.at("shape").get<std::vector<int64_t>>()});
  }
  return leaves;
}

// Streams the pseudo-random bytes to `sink` in pieces of 1 byte .. 3 MiB taken from a fixed cycle;
// a piece that starts inside a word regenerates it from the word boundary.
template <typename Sink>
Status stream(uint64_t seed, uint64_t total, Sink&& sink) {
  static constexpr size_t kPieces[] = {3u << 20, 1, 7, 1u << 20, 24, 2u << 20, 4096 + 8, 3u << 20};
  std::vector<uint8_t> buf;
  uint64_t off = 0;
  size_t cycle = 0;
  while (off < total) {
    size_t n = size_t(std::min<uint64_t>(kPieces[cycle++ % std::size(kPieces)], total - off));
    const uint64_t start = off & ~uint64_t(7);
    buf.resize(size_t(off - start) + n);
    fill_stream(seed, start, buf);
    GPTOSS_TRY(sink(buf.data() + (off - start), n));
    off += n;
  }
  return {};
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

Status run(const std::string& spec_path, const std::string& out, uint64_t seed, uint64_t max_chunk_bytes,
           const std::string& baseline) {
  std::ifstream in(spec_path);
  if (!in) return Error("{}: cannot open", spec_path);
  json spec = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (spec.is_discarded()) return Error("{}: not valid JSON", spec_path);
  GPTOSS_ASSIGN(auto leaves, parse_spec(spec));
  OrbaxWriterOptions opt;
  opt.max_chunk_bytes = max_chunk_bytes;
  if (spec.contains("empty_dicts")) opt.empty_dicts = spec["empty_dicts"].get<std::vector<std::string>>();

  if (::mkdir(out.c_str(), 0755) != 0) return Error("{}: cannot create: {}", out, std::strerror(errno));
  const auto t0 = std::chrono::steady_clock::now();
  GPTOSS_ASSIGN(auto w, OrbaxWriter::create(out, std::move(leaves), opt));
  const uint64_t total = w->data_bytes_total();
  GPTOSS_TRY(stream(seed, total, [&](const uint8_t* p, size_t n) { return w->append(p, n); }));
  GPTOSS_TRY(w->finish());
  const double secs = seconds_since(t0);

  json report = {{"bytes", total}, {"seconds", secs}, {"mb_per_s", total / 1e6 / secs}};
  if (!baseline.empty()) {
    const auto t1 = std::chrono::steady_clock::now();
    int fd = ::open(baseline.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return Error("{}: cannot create: {}", baseline, std::strerror(errno));
    Status s = stream(seed, total, [&](const uint8_t* p, size_t n) -> Status {
      while (n > 0) {
        ssize_t k = ::write(fd, p, n);
        if (k < 0) return Error("{}: write failed: {}", baseline, std::strerror(errno));
        p += k;
        n -= size_t(k);
      }
      return {};
    });
    if (s.ok() && ::fsync(fd) != 0) s = Error("{}: fsync failed", baseline);
    ::close(fd);
    GPTOSS_TRY(s);
    const double bsecs = seconds_since(t1);
    report["baseline_seconds"] = bsecs;
    report["baseline_mb_per_s"] = total / 1e6 / bsecs;
  }
  std::printf("%s\n", report.dump().c_str());
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Write an Orbax checkpoint of pseudo-random leaves for Orbax to check"};
  std::string spec, out, baseline;
  uint64_t seed = 0, max_chunk_bytes = OrbaxWriterOptions{}.max_chunk_bytes;
  app.add_option("--spec", spec, "JSON list of leaves (name, dtype, shape) and empty dicts")->required();
  app.add_option("--out", out, "checkpoint folder to create (must not exist)")->required();
  app.add_option("--seed", seed, "seed of the byte stream");
  app.add_option("--max-chunk-bytes", max_chunk_bytes, "largest zarr chunk file");
  app.add_option("--baseline", baseline, "also write the same bytes to this plain file and time it");
  CLI11_PARSE(app, argc, argv);
  Status s = run(spec, out, seed, max_chunk_bytes, baseline);
  if (!s.ok()) {
    std::fprintf(stderr, "gptoss-orbax-selftest: %s\n", s.message().c_str());
    return 1;
  }
  return 0;
}
