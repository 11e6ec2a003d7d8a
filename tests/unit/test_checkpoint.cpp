// Config parsing, the tensor table and Checkpoint::open edge cases, plus the converter's codecs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "convert/tensor_codec.h"
#include "core/mxfp4.h"
#include "format/checkpoint.h"

using namespace gptoss;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

json tiny_hf_config() {
  return {{"num_hidden_layers", 2}, {"num_local_experts", 4}, {"num_experts_per_tok", 2}, {"vocab_size", 64},
          {"hidden_size", 32},      {"intermediate_size", 32}, {"head_dim", 8},         {"num_attention_heads", 4},
          {"num_key_value_heads", 2}, {"sliding_window", 4}};
}

// A temp dir holding a valid tiny HF checkpoint (one file) written with SafetensorsWriter.
struct TinyCheckpoint {
  fs::path dir;
  explicit TinyCheckpoint(const json& cfg, ExpertStorage experts = ExpertStorage::Mxfp4) {
    dir = fs::temp_directory_path() / ("gptoss_ckpt_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::ofstream(dir / "config.json") << cfg.dump();
    auto c = ModelConfig::from_json(cfg, "cfg");
    EXPECT_TRUE(c.ok()) << c.status().message();
    std::vector<TensorDecl> decls;
    for (const auto& s : model_tensor_specs(*c, experts)) decls.push_back({s.name, s.quantized() ? DType::U8 : DType::BF16, s.shape});
    auto w = SafetensorsWriter::create((dir / "model.safetensors").string(), decls);
    EXPECT_TRUE(w.ok());
    std::vector<uint8_t> zeros((*w)->data_bytes_total(), 0x7f);
    EXPECT_TRUE((*w)->append(zeros.data(), zeros.size()).ok());
    EXPECT_TRUE((*w)->finish().ok());
  }
  ~TinyCheckpoint() { fs::remove_all(dir); }
  static inline int counter = 0;
};

}  // namespace

TEST(Config, ParsesHfAndOriginalFlavours) {
  auto hf = ModelConfig::from_json(tiny_hf_config(), "hf");
  ASSERT_TRUE(hf.ok()) << hf.status().message();
  EXPECT_EQ(hf->num_local_experts, 4);
  EXPECT_TRUE(hf->layer_is_sliding[0]);
  EXPECT_FALSE(hf->layer_is_sliding[1]);
  json o = {{"num_hidden_layers", 2}, {"num_experts", 4}, {"experts_per_token", 2}, {"vocab_size", 64},
            {"hidden_size", 32},      {"intermediate_size", 32}, {"head_dim", 8}, {"num_attention_heads", 4},
            {"num_key_value_heads", 2}, {"sliding_window", 4}, {"initial_context_length", 64},
            {"rope_scaling_factor", 32.0}};
  auto orig = ModelConfig::from_json(o, "orig");
  ASSERT_TRUE(orig.ok()) << orig.status().message();
  EXPECT_EQ(orig->num_local_experts, 4);
  EXPECT_EQ(orig->max_position_embeddings, 64 * 32);
  // Round trip through to_hf_json.
  auto back = ModelConfig::from_json(orig->to_hf_json(true), "back");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->max_position_embeddings, orig->max_position_embeddings);
  EXPECT_EQ(back->rope_original_max_position, 64);
}

TEST(Config, RejectsBadValues) {
  for (auto [key, val] : {std::pair<const char*, json>{"hidden_size", 33}, {"num_key_value_heads", 3},
                          {"head_dim", 7}, {"num_experts_per_tok", 9}, {"vocab_size", -1}, {"hidden_size", "big"}}) {
    json j = tiny_hf_config();
    j[key] = val;
    auto r = ModelConfig::from_json(j, "c.json");
    EXPECT_FALSE(r.ok()) << key;
    if (!r.ok()) {
      EXPECT_NE(r.status().message().find("c.json"), std::string::npos);
    }
  }
  json j = tiny_hf_config();
  j["layer_types"] = {"sliding_attention"};
  EXPECT_FALSE(ModelConfig::from_json(j, "c").ok());
  EXPECT_FALSE(ModelConfig::from_json(json::array(), "c").ok());
}

TEST(TensorTable, CountsShapesAndOriginalSlices) {
  auto c = ModelConfig::from_json(tiny_hf_config(), "c");
  ASSERT_TRUE(c.ok());
  auto mx = model_tensor_specs(*c, ExpertStorage::Mxfp4);
  auto dn = model_tensor_specs(*c, ExpertStorage::Dense);
  EXPECT_EQ(mx.size(), 3u + 2 * 19);
  EXPECT_EQ(dn.size(), 3u + 2 * 17);
  EXPECT_EQ(mx.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(mx.back().name, "lm_head.weight");
  for (const auto& s : dn)
    if (s.role == TensorRole::GateUpDense) {
      EXPECT_EQ(s.shape, (std::vector<int64_t>{4, 32, 64}));
    }
  for (const auto& s : mx) {
    auto o = original_source(s, *c);
    if (s.role == TensorRole::KWeight) {
      EXPECT_EQ(o.name, fmt::format("block.{}.attn.qkv.weight", s.layer));
      EXPECT_EQ(o.rows_begin, 32);
      EXPECT_EQ(o.rows_end, 48);
    }
  }
}

TEST(Checkpoint, OpensValidAndLimitsLayers) {
  TinyCheckpoint t(tiny_hf_config());
  auto ck = Checkpoint::open(t.dir.string());
  ASSERT_TRUE(ck.ok()) << ck.status().message();
  EXPECT_EQ(ck->layout(), CheckpointLayout::HuggingFace);
  EXPECT_EQ(ck->tensors().size(), 41u);
  CheckpointOptions o;
  o.max_layers = 1;
  auto one = Checkpoint::open(t.dir.string(), o);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->config().num_hidden_layers, 1);
  EXPECT_EQ(one->tensors().size(), 22u);
  EXPECT_EQ(one->find("model.layers.1.input_layernorm.weight"), nullptr);
}

TEST(Checkpoint, DenseExperts) {
  TinyCheckpoint t(tiny_hf_config(), ExpertStorage::Dense);
  auto ck = Checkpoint::open(t.dir.string());
  ASSERT_TRUE(ck.ok()) << ck.status().message();
  EXPECT_EQ(ck->experts(), ExpertStorage::Dense);
  EXPECT_EQ(ck->expert_dtype(), DType::BF16);
}

TEST(Checkpoint, RejectsExtraLayerAndShapeMismatch) {
  json more = tiny_hf_config();
  TinyCheckpoint t(more);
  json fewer = more;
  fewer["num_hidden_layers"] = 1;
  std::ofstream(t.dir / "config.json") << fewer.dump();
  auto r = Checkpoint::open(t.dir.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("model.layers.1"), std::string::npos) << r.status().message();
  json wider = more;
  wider["hidden_size"] = 64;
  std::ofstream(t.dir / "config.json") << wider.dump();
  r = Checkpoint::open(t.dir.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("expected"), std::string::npos) << r.status().message();
}

TEST(Checkpoint, RejectsNonCheckpointDirs) {
  auto r = Checkpoint::open("/nonexistent/dir");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not a directory"), std::string::npos);
  fs::path d = fs::temp_directory_path() / ("gptoss_empty_" + std::to_string(::getpid()));
  fs::create_directories(d);
  r = Checkpoint::open(d.string());
  EXPECT_FALSE(r.ok());
  fs::remove_all(d);
}

TEST(Codec, DenseTransposeMatchesRowDecode) {
  const int64_t rows = 48, cols = 96;
  std::vector<uint8_t> blocks(size_t(rows * cols / 2)), scales(size_t(rows * cols / 32));
  for (size_t i = 0; i < blocks.size(); ++i) blocks[i] = uint8_t(i * 37 + 11);
  for (size_t i = 0; i < scales.size(); ++i) scales[i] = uint8_t(120 + i % 9);
  std::vector<float> ref(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    mxfp4_decode_row(blocks.data() + r * cols / 2, scales.data() + r * cols / 32, int(cols), ref.data() + r * cols);
  std::vector<float> f32(size_t(rows * cols));
  std::vector<uint16_t> bf(size_t(rows * cols));
  // Two column slices, as the converter streams them.
  mxfp4_to_dense_transposed(blocks.data(), scales.data(), rows, cols, 0, 64, DType::F32, f32.data());
  mxfp4_to_dense_transposed(blocks.data(), scales.data(), rows, cols, 64, 96, DType::F32, f32.data() + 64 * rows);
  mxfp4_to_dense_transposed(blocks.data(), scales.data(), rows, cols, 0, cols, DType::BF16, bf.data());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      EXPECT_EQ(f32[size_t(c * rows + r)], ref[size_t(r * cols + c)]);
      EXPECT_EQ(bf16_to_f32(bf[size_t(c * rows + r)]), ref[size_t(r * cols + c)]);
    }
}

TEST(Codec, FloatCasts) {
  const uint16_t h[4] = {0x3c00, 0xc000, 0x0001, 0x7bff};  // 1, -2, smallest subnormal, 65504
  float f[4];
  convert_floats(h, DType::F16, f, DType::F32, 4);
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[1], -2.0f);
  EXPECT_EQ(f[2], std::ldexp(1.0f, -24));
  EXPECT_EQ(f[3], 65504.0f);
  uint16_t b[4];
  convert_floats(f, DType::F32, b, DType::BF16, 4);
  EXPECT_EQ(b[0], 0x3f80);
  EXPECT_EQ(b[1], 0xc000);
}
