#include "parallel/shard_weights.h"

#include <cstring>
#include <string>

#include "core/mxfp4.h"

namespace gptoss {

namespace {

size_t elem_size(WeightType t) { return t == WeightType::F32 ? 4 : 2; }

Status check_shape(const MatrixRef& m, int64_t rows, int64_t cols, const std::string& what) {
  if (m.rows != rows || m.cols != cols)
    return Error("{}: shape [{}, {}], expected [{}, {}] for this config", what, m.rows, m.cols, rows, cols);
  return {};
}

class Slicer {
 public:
  explicit Slicer(ShardWeights& out) : out_(out) {}

  // Logical rows [r.begin, r.end()) of m. A view except for transposed dense storage, where they are columns.
  MatrixRef rows(const MatrixRef& m, ShardRange r) {
    MatrixRef s = m;
    s.rows = r.count;
    const auto* base = static_cast<const uint8_t*>(m.data);
    if (m.type == WeightType::MXFP4) {  // blocks [rows, cols/32, 16], scales [rows, cols/32]
      const size_t blocks_per_row = size_t(m.cols) / kMxfp4BlockElems;
      s.data = base + size_t(r.begin) * blocks_per_row * kMxfp4BlockBytes;
      s.scales = m.scales + size_t(r.begin) * blocks_per_row;
    } else if (!m.transposed) {
      s.data = base + size_t(r.begin) * size_t(m.cols) * elem_size(m.type);
    } else {  // storage [cols, rows]: a piece of each storage row
      s.data = copy_pieces(base, size_t(m.cols), size_t(m.rows), r, elem_size(m.type));
    }
    return s;
  }

  // Logical columns [r.begin, r.end()) of dense m: a copy for row-major storage, a view for transposed storage.
  MatrixRef cols(const MatrixRef& m, ShardRange r) {
    MatrixRef s = m;
    s.cols = r.count;
    const auto* base = static_cast<const uint8_t*>(m.data);
    if (m.transposed) s.data = base + size_t(r.begin) * size_t(m.rows) * elem_size(m.type);
    else s.data = copy_pieces(base, size_t(m.rows), size_t(m.cols), r, elem_size(m.type));
    return s;
  }

 private:
  // [n_rows, r.count] from row-major [n_rows, row_elems]: elements [r.begin, r.end()) of each row.
  const uint8_t* copy_pieces(const uint8_t* base, size_t n_rows, size_t row_elems, ShardRange r, size_t es) {
    const size_t piece = size_t(r.count) * es;
    std::vector<uint8_t> buf(n_rows * piece);
    for (size_t i = 0; i < n_rows; ++i)
      std::memcpy(buf.data() + i * piece, base + (i * row_elems + size_t(r.begin)) * es, piece);
    out_.copied_bytes += buf.size();
    out_.owned.push_back(std::move(buf));  // the moved vector keeps its buffer
    return out_.owned.back().data();
  }

  ShardWeights& out_;
};

}  // namespace

ShardDtypes shard_dtypes_of(const ModelWeights& w) {
  ShardDtypes dt;
  dt.embed = w.embed.type;
  dt.dense = w.lm_head.type;
  if (!w.layers.empty()) dt.experts = w.layers[0].gate_up.first.type;
  return dt;
}

Result<std::unique_ptr<ShardWeights>> extract_shard(const ModelWeights& host, const ModelConfig& c,
                                                    const ShardPlan& plan, int rank) {
  if (rank < 0 || rank >= plan.ranks) return Error("extract_shard: rank {} is outside 0..{}", rank, plan.ranks - 1);
  if (host.layers.size() != size_t(c.num_hidden_layers))
    return Error("extract_shard: {} layers, expected {}", host.layers.size(), c.num_hidden_layers);
  const RankShard& s = plan.shards[size_t(rank)];
  const int64_t H = c.hidden_size, V = c.vocab_size, E = c.num_local_experts, I = c.intermediate_size;
  GPTOSS_TRY(check_shape(host.lm_head, V, H, "lm_head"));
  GPTOSS_TRY(check_shape(host.embed, V, H, "embed_tokens"));
  if (host.lm_head.type == WeightType::MXFP4) return Error("lm_head: MXFP4 output heads are not split");

  auto out = std::make_unique<ShardWeights>();
  Slicer slice(*out);
  ModelWeights& w = out->w;
  w.embed = host.embed;
  w.final_norm = host.final_norm;
  w.lm_head = slice.rows(host.lm_head, s.vocab);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& h = host.layers[size_t(l)];
    const std::string at = "layer " + std::to_string(l);
    GPTOSS_TRY(check_shape(h.q, c.q_dim(), H, at + " q_proj"));
    GPTOSS_TRY(check_shape(h.k, c.kv_dim(), H, at + " k_proj"));
    GPTOSS_TRY(check_shape(h.v, c.kv_dim(), H, at + " v_proj"));
    GPTOSS_TRY(check_shape(h.o, H, c.q_dim(), at + " o_proj"));
    if (h.o.type == WeightType::MXFP4) return Error("{} o_proj: MXFP4 is not split by columns", at);
    if (h.gate_up.count != E || h.down.count != E)
      return Error("{}: {} experts, expected {}", at, h.gate_up.count, E);
    GPTOSS_TRY(check_shape(h.gate_up.first, 2 * I, H, at + " gate_up_proj"));
    GPTOSS_TRY(check_shape(h.down.first, H, I, at + " down_proj"));
    LayerWeights L = h;
    L.q = slice.rows(h.q, s.q_rows);
    L.k = slice.rows(h.k, s.kv_rows);
    L.v = slice.rows(h.v, s.kv_rows);
    L.o = slice.cols(h.o, s.q_rows);
    L.q_bias = h.q_bias + s.q_rows.begin;
    L.k_bias = h.k_bias + s.kv_rows.begin;
    L.v_bias = h.v_bias + s.kv_rows.begin;
    L.o_bias = s.adds_o_bias ? h.o_bias : nullptr;
    L.sinks = h.sinks + s.q_heads.begin;
    const int e0 = int(s.experts.begin), ne = int(s.experts.count);
    L.gate_up = {h.gate_up.expert(e0), h.gate_up.stride, h.gate_up.scales_stride, ne};
    L.down = {h.down.expert(e0), h.down.stride, h.down.scales_stride, ne};
    L.gate_up_bias = h.gate_up_bias + size_t(e0) * size_t(2 * I);
    L.down_bias = h.down_bias + size_t(e0) * size_t(H);
    w.layers.push_back(L);
  }
  return out;
}

}  // namespace gptoss
