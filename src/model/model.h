// What model.cpp implements besides the public Model, Session and Batch (include/gptoss/gptoss.h): a step's
// activation buffers and the forward pass, written once over the Backend ops. The library's own code includes
// this header rather than gptoss/gptoss.h where it uses the internals Model exposes (its backend, checkpoint,
// config and weights).
#pragma once

#include <cstdint>

#include "format/checkpoint.h"
#include "gptoss/gptoss.h"
#include "model/backend.h"
#include "model/weights.h"

namespace gptoss {

// Activations of one forward step in backend memory: [rows, n] each; logits [out rows, vocab].
struct StepBuffers {
  int rows = 0, out_rows = 0;
  float *x = nullptr, *h = nullptr, *g = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *attn = nullptr;
  float* logits = nullptr;
  static Result<StepBuffers> create(Backend& be, const ModelConfig& c, int rows, int out_rows);
  // Names these buffers in a Step (a recorded step replays only over the buffers it was recorded with).
  uint64_t key() const {
    return uint64_t(reinterpret_cast<uintptr_t>(x)) * 31u ^ uint64_t(reinterpret_cast<uintptr_t>(logits));
  }
};

// The forward pass of one step begun with begin_step (docs/MODEL.md §4): every row through every layer, then
// the output head over the step's out rows into b.logits [R, vocab]. Backends that record steps (CUDA graphs)
// replay the ops of an earlier step of the same shape instead of receiving them again.
Status forward_step(Backend& be, const ModelConfig& c, const ModelWeights& w, const StepBuffers& b, const Step& st);

}  // namespace gptoss
