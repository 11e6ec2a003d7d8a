// Options of the public API that the layers below it read too: which device runs the model
// (BackendOptions, read by the backend factory), how much of a checkpoint to open (CheckpointOptions),
// and the KV cache's precision and a step's default size (SessionOptions, Batch::Options).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace gptoss {

// CPU matrix products: Fast (int16 activations for the MXFP4 experts in decode, weights decoded once per
// prefill step; logits within 2e-4 relative of Exact on the test models) or Exact (float32 activations, the
// reference's order of sums).
enum class CpuMath : uint8_t { Fast, Exact };

// "cpu" or "cuda". `threads` applies to the CPU (0 = all cores).
struct BackendOptions {
  std::string device = "cpu";
  int threads = 0;
  size_t gpu_memory_limit = 0;     // bytes; 0 = whatever the device has
  double gpu_memory_fraction = 0;  // of the device's total memory; 0 = unused (the seed's MEM_FRACTION)
  bool gpu_pack_bf16 = true;       // CUDA: bf16 projections and output head packed losslessly (fewer bytes)
  CpuMath cpu_math = CpuMath::Fast;  // CPU backend only
};

struct CheckpointOptions {
  // Expose only the first n layers (and embed/norm/head): --test-only / --layers. -1: all.
  int max_layers = -1;
};

enum class KvPrecision : uint8_t { F32, BF16 };

// Tokens one forward step carries by default (the prefill chunk): the default of every layer that has one.
inline constexpr int kDefaultMaxBatch = 128;

}  // namespace gptoss
