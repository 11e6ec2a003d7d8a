// Streaming writer for an Orbax PyTree checkpoint (the `jax_params/` folder of `--format orbax`).
//
// Layout written into `params_dir` (docs/ORBAX.md has the details and the Orbax versions tested):
//   _METADATA                 JSON tree metadata: one entry per leaf (and per empty dict), keyed by
//                             its key path; every leaf has value_type "np.ndarray", and
//                             use_ocdbt=false, use_zarr3=false so Orbax reads one zarr v2 array per leaf.
//   _CHECKPOINT_METADATA      JSON: handler name (StandardCheckpointHandler) and timestamps.
//   <dotted.leaf.name>/.zarray  zarr v2 array metadata: shape, chunk shape, dtype, no compressor, C order.
//   <dotted.leaf.name>/<i>.<j>...  one file per chunk: the chunk's elements, raw little-endian, C order.
//
// Leaf names are dotted paths; "model.layers.0.mlp.norm.scale" restores as
// {"model": {"layers": {"0": {"mlp": {"norm": {"scale": array}}}}}}.
//
// Chunks split only the leading dimensions, so each chunk is one contiguous run of the leaf's
// C-order bytes and the writer can stream: bytes are appended in declaration order and go straight
// to the current chunk file through one I/O buffer. A chunk is at most `max_chunk_bytes`; the last
// chunk along the split dimension is zero-padded to the full chunk shape, as zarr v2 requires.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "format/safetensors.h"  // TensorDecl

namespace gptoss {

struct OrbaxWriterOptions {
  // Upper bound on one chunk file. 64 MiB keeps the 20b embedding ([201088, 2880] bf16, 1.16 GB)
  // at 18 chunk files while restore still reads chunks in parallel.
  uint64_t max_chunk_bytes = 64ull << 20;
  // Dotted paths that restore as empty dicts ({}); they hold no leaves.
  std::vector<std::string> empty_dicts;
};

// Chunk shape for a leaf of `shape` with `elem_size`-byte elements: the trailing dimensions whole,
// one dimension split into near-equal runs of rows, the dimensions before it chunked by 1.
// Zero-size dimensions get chunk 1 (zarr chunks are >= 1). Exposed for tests.
std::vector<int64_t> orbax_chunk_shape(std::span<const int64_t> shape, size_t elem_size, uint64_t max_chunk_bytes);

class OrbaxWriter {
 public:
  // Validates the leaves (names, dtypes F32/BF16/U8, shapes), creates one folder with its .zarray per
  // leaf inside `params_dir` (which must exist and is created by the caller).
  static Result<std::unique_ptr<OrbaxWriter>> create(const std::string& params_dir, std::vector<TensorDecl> leaves,
                                                     OrbaxWriterOptions options = {});
  ~OrbaxWriter();

  // Appends bytes of the leaves in declaration order, each leaf in C order; a call may span leaves.
  Status append(const void* data, size_t n);
  // Checks that every declared byte was written, fsyncs every chunk, .zarray and leaf folder, then
  // writes and fsyncs _METADATA and _CHECKPOINT_METADATA last, so a crash before the end leaves a
  // folder Orbax refuses rather than one with missing data.
  Status finish();

  uint64_t data_bytes_total() const { return total_; }
  uint64_t data_bytes_written() const { return written_; }

 private:
  struct Leaf {
    TensorDecl decl;
    std::string dir;             // params_dir/<dotted name>
    std::vector<int64_t> chunk;  // zarr chunk shape
    int split_dim = -1;          // dimension cut into runs of rows; -1: one chunk holds the leaf
    uint64_t nbytes = 0;         // numel x element size
  };

  OrbaxWriter() = default;
  Status begin_leaf();
  Status open_chunk();
  Status close_chunk();
  Status flush();
  std::string chunk_key() const;

  std::string params_dir_;
  OrbaxWriterOptions options_;
  std::vector<Leaf> leaves_;
  uint64_t total_ = 0;
  uint64_t written_ = 0;
  bool finished_ = false;

  // Streaming position.
  size_t leaf_ = 0;                  // index of the leaf receiving bytes
  uint64_t leaf_written_ = 0;        // bytes of that leaf written so far
  std::vector<int64_t> grid_index_;  // chunk index along dims [0, split_dim] of the open chunk
  int fd_ = -1;                      // open chunk file
  std::string chunk_path_;
  uint64_t chunk_left_ = 0;          // data bytes still due in the open chunk
  uint64_t chunk_pad_ = 0;           // zero bytes that end the open chunk
  std::vector<uint8_t> buf_;
  size_t buf_used_ = 0;
  std::vector<std::string> unsynced_;  // closed chunk files that finish() fsyncs
};

}  // namespace gptoss
