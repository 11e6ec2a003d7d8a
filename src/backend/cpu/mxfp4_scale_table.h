// factor * 2^(s - 127) for every MXFP4 scale byte s: the table the CPU kernels read a block's scale from, with
// the kernel's own fixed factor folded in (a power of two, so exact: 1/2 undoes a doubled E2M1 table, 1/512 also
// the int16 codes' 256 of q16.h). Internal linkage (an unnamed namespace), as the tile headers that use it: each
// file keeps its own copy compiled with its own ISA flags.
#pragma once

#include <cstdint>

#include "core/mxfp4.h"

namespace gptoss::cpu {
namespace {

struct Mxfp4ScaleTable {
  alignas(64) float v[256];
  explicit Mxfp4ScaleTable(float factor) {
    for (int s = 0; s < 256; ++s) v[s] = factor * mxfp4_scale(uint8_t(s));
  }
};

}  // namespace
}  // namespace gptoss::cpu
