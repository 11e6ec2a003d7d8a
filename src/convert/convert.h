// `gptoss convert` as a library call: reads any checkpoint Checkpoint::open accepts and streams it
// into one of the output formats (docs/FORMAT.md), in bounded memory, atomically.
//
// Pipeline: a worker thread walks the output tensors in file order, producing chunks of at most a
// few MiB (zero-copy views of the input mapping when bytes pass through unchanged, otherwise
// dequantized / cast into a pooled buffer) and hashing them (xxh3-64 per tensor); the calling
// thread writes each chunk to the sink, then drops the consumed input pages from the resident set
// (madvise DONTNEED), so RSS stays at the pool size whatever the model size.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "core/status.h"

namespace gptoss {

enum class OutputFormat : uint8_t { Native, Safetensors, Orbax };
// Auto: mxfp4 for native when the input experts are MXFP4 (else their dense dtype); bf16 otherwise.
enum class OutputDType : uint8_t { Auto, Mxfp4, BF16, F32 };

struct ConvertOptions {
  std::string model_path;
  std::string output;  // empty: beside the input, suffix per format (DIR-gptoss, DIR-bf16, DIR-f32, DIR-jax)
  OutputFormat format = OutputFormat::Native;
  OutputDType dtype = OutputDType::Auto;
  int max_layers = -1;  // --test-only = 2, --layers N
  bool force = false;   // replace an existing output
  int threads = 2;      // 1: produce and write on one thread
  uint64_t max_shard_bytes = 4ull << 30;
  const std::atomic<bool>* cancel = nullptr;  // set by a signal handler: stop, clean up, fail
  bool show_progress = false;                 // draw a bar on stderr (the caller checks isatty / --quiet)
};

struct ConvertSummary {
  std::string input_dir, output_dir;
  std::string source_layout, format, dtype;
  int layers = 0;
  size_t tensors = 0;
  size_t files = 0;
  uint64_t bytes_in = 0, bytes_out = 0;
  double seconds = 0;
  uint64_t peak_rss = 0;
};

Result<ConvertSummary> convert_checkpoint(const ConvertOptions& opts);

// Output path used when ConvertOptions::output is empty.
std::string default_output_path(const std::string& model_path, OutputFormat f, OutputDType d);

struct VerifySummary {
  size_t tensors = 0;
  uint64_t bytes = 0;
  double seconds = 0;
};
// Recomputes every checksum of a native checkpoint's gptoss.json manifest; the first mismatch
// fails with the file, tensor, expected and actual checksum.
Result<VerifySummary> verify_native(const std::string& dir, bool show_progress = false);

const char* format_name(OutputFormat f);
const char* output_dtype_name(OutputDType d);

}  // namespace gptoss
