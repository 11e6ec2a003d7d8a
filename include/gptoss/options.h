// Options of the public API that the layers below it read too: which device runs the model
// (BackendOptions, read by the backend factory), how much of a checkpoint to open (CheckpointOptions),
// and the KV cache's precision and a step's default size (SessionOptions, Batch::Options).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace gptoss {

// "cpu" or "cuda". `threads` applies to the CPU (0 = all cores).
struct BackendOptions {
  std::string device = "cpu";
  int threads = 0;
  size_t gpu_memory_limit = 0;     // bytes; 0 = whatever the device has
  double gpu_memory_fraction = 0;  // of the device's total memory; 0 = unused (the seed's MEM_FRACTION)
  bool gpu_pack_bf16 = true;       // CUDA: bf16 projections and output head packed losslessly (fewer bytes)
};

struct CheckpointOptions {
  // Expose only the first n layers (and embed/norm/head): --test-only / --layers. -1: all.
  int max_layers = -1;
};

enum class KvPrecision : uint8_t { F32, BF16 };

// Tokens one forward step carries by default (the prefill chunk): the default of every layer that has one.
inline constexpr int kDefaultMaxBatch = 128;

}  // namespace gptoss
