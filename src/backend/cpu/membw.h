// Sustained memory read bandwidth of this machine, for the roofline that `gptoss bench` reports.
#pragma once

#include "core/threadpool.h"

namespace gptoss::cpu {

// All pool threads read disjoint parts of a 256 MiB buffer (8x a 32 MiB last-level cache); returns the
// best of several passes in GB/s (1e9 bytes/s). Takes about 0.1-0.3 s, including first-touching the
// buffer, which is freed again before returning.
double measure_read_bandwidth_gbs(ThreadPool& pool);

}  // namespace gptoss::cpu
