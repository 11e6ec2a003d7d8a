// NCCL communicators for a model split over the GPUs of one host (docs/MULTIGPU.md): one per rank, each used by
// that rank's thread, with the two collectives a sharded step needs. Built only with CUDA and NCCL (the
// gptoss_nccl_objs target of src/CMakeLists.txt), outside the CUDA module so that loading the CUDA backend does
// not need libnccl. Not yet used by the forward pass.
// NVLink multicast (NVLS) stays off: NCCL_NVLS_ENABLE=0 is set before the first communicator is made.
#pragma once

#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"

struct ncclComm;  // nccl.h's communicator, kept out of this header

namespace gptoss {

// ncclUniqueId's bytes: made once (rank 0) and handed to every rank's create_rank.
struct NcclId {
  std::array<char, 128> bytes{};
};

class NcclComm {
 public:
  // One communicator per entry of `devices` (ncclCommInitAll): element i is rank i on device devices[i].
  static Result<std::vector<std::unique_ptr<NcclComm>>> create_all(std::span<const int> devices);
  static Result<NcclId> new_id();
  // Rank `rank` of `nranks` on `device`; every rank calls it at the same time (its own thread or process), and
  // each call returns once all have joined.
  static Result<std::unique_ptr<NcclComm>> create_rank(const NcclId& id, int nranks, int rank, int device);
  ~NcclComm();
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int device() const { return device_; }

  // Enqueued on `stream` (of this rank's device); every rank must issue the same collectives in the same order.
  // buf[count] = the sum over ranks of buf[count] (in place; float32).
  Status all_reduce_sum(float* buf, size_t count, cudaStream_t stream);
  // recv[size() * count] = every rank's send[count], in rank order.
  Status all_gather(const float* send, size_t count, float* recv, cudaStream_t stream);
  // An error a collective hit after it was enqueued (a peer failed, a timeout), or ok.
  Status async_error() const;

 private:
  NcclComm(ncclComm* comm, int rank, int size, int device) : comm_(comm), rank_(rank), size_(size), device_(device) {}
  ncclComm* comm_;
  int rank_, size_, device_;
};

// Several ranks' collectives issued from one thread go between these two (ncclGroupStart / ncclGroupEnd).
Status nccl_group_start();
Status nccl_group_end();

// "2.28.9": the NCCL library in use.
std::string nccl_version();

}  // namespace gptoss
