#include "parallel/nccl/nccl_comm.h"

#include <nccl.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

namespace gptoss {

namespace {

Status nccl_error(const char* what, ncclResult_t r, ncclComm_t comm = nullptr) {
  const char* last = ncclGetLastError(comm);
  return Error("{}: {} ({}){}{}", what, ncclGetErrorString(r), int(r), last && *last ? ": " : "", last ? last : "");
}

#define NCCL_TRY(what, call)                          \
  do {                                                \
    const ncclResult_t r_ = (call);                   \
    if (r_ != ncclSuccess) return nccl_error(what, r_); \
  } while (0)

// NVLink multicast (NVLS) stays off on the machines this runs on; NCCL reads the variable at its first init.
void disable_nvlink_multicast() {
  static std::once_flag once;
  std::call_once(once, [] { setenv("NCCL_NVLS_ENABLE", "0", 1); });
}

}  // namespace

Result<std::vector<std::unique_ptr<NcclComm>>> NcclComm::create_all(std::span<const int> devices) {
  if (devices.empty()) return Error("NCCL: no devices given");
  disable_nvlink_multicast();
  std::vector<ncclComm_t> comms(devices.size());
  NCCL_TRY("ncclCommInitAll", ncclCommInitAll(comms.data(), int(devices.size()), devices.data()));
  std::vector<std::unique_ptr<NcclComm>> out;
  for (size_t i = 0; i < comms.size(); ++i)
    out.push_back(std::unique_ptr<NcclComm>(new NcclComm(comms[i], int(i), int(comms.size()), devices[i])));
  return out;
}

Result<NcclId> NcclComm::new_id() {
  disable_nvlink_multicast();
  ncclUniqueId u;
  NCCL_TRY("ncclGetUniqueId", ncclGetUniqueId(&u));
  NcclId id;
  static_assert(sizeof(u.internal) == sizeof(id.bytes));
  std::memcpy(id.bytes.data(), u.internal, sizeof(u.internal));
  return id;
}

Result<std::unique_ptr<NcclComm>> NcclComm::create_rank(const NcclId& id, int nranks, int rank, int device) {
  if (nranks < 1 || rank < 0 || rank >= nranks) return Error("NCCL: rank {} of {} ranks", rank, nranks);
  disable_nvlink_multicast();
  if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess)
    return Error("NCCL rank {}: device {}: {}", rank, device, cudaGetErrorString(e));
  ncclUniqueId u;
  std::memcpy(u.internal, id.bytes.data(), sizeof(u.internal));
  ncclComm_t comm = nullptr;
  NCCL_TRY("ncclCommInitRank", ncclCommInitRank(&comm, nranks, u, rank));
  return std::unique_ptr<NcclComm>(new NcclComm(comm, rank, nranks, device));
}

NcclComm::~NcclComm() {
  if (comm_) (void)ncclCommDestroy(comm_);
}

Status NcclComm::all_reduce_sum(float* buf, size_t count, cudaStream_t stream) {
  const ncclResult_t r = ncclAllReduce(buf, buf, count, ncclFloat32, ncclSum, comm_, stream);
  if (r != ncclSuccess) return nccl_error("ncclAllReduce", r, comm_);
  return {};
}

Status NcclComm::all_gather(const float* send, size_t count, float* recv, cudaStream_t stream) {
  const ncclResult_t r = ncclAllGather(send, recv, count, ncclFloat32, comm_, stream);
  if (r != ncclSuccess) return nccl_error("ncclAllGather", r, comm_);
  return {};
}

Status NcclComm::async_error() const {
  ncclResult_t async = ncclSuccess;
  NCCL_TRY("ncclCommGetAsyncError", ncclCommGetAsyncError(comm_, &async));
  if (async != ncclSuccess) return nccl_error("NCCL (asynchronous)", async, comm_);
  return {};
}

Status nccl_group_start() {
  NCCL_TRY("ncclGroupStart", ncclGroupStart());
  return {};
}

Status nccl_group_end() {
  NCCL_TRY("ncclGroupEnd", ncclGroupEnd());
  return {};
}

std::string nccl_version() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "unknown";
  // NCCL_VERSION(X, Y, Z) = X * 10000 + Y * 100 + Z from 2.9 on.
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

}  // namespace gptoss
