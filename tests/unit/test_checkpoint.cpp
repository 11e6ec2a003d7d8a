// Config parsing, the tensor table and Checkpoint::open edge cases, plus the converter's codecs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

#include "convert/convert.h"
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

// Issue 17, items 2 and 4: every config value bounded, in 64 bits, one short line naming field, value, bound.
TEST(Config, BoundsEveryField) {
  struct Case {
    const char* key;
    json value;
    const char* expect;
  };
  const Case cases[] = {
      {"num_hidden_layers", 100000000, "'num_hidden_layers' is 100000000, expected 1..1024"},
      {"num_hidden_layers", json(uint64_t(18446744073709551615ull)), "'num_hidden_layers' is 9223372036854775807"},
      {"num_hidden_layers", 0, "'num_hidden_layers' is 0"},
      {"num_local_experts", 1000000, "'num_local_experts' is 1000000, expected 1..1024"},
      {"num_experts_per_tok", 5, "'num_experts_per_tok' is 5, expected 1..4"},
      {"vocab_size", 2147483647, "'vocab_size' is 2147483647"},
      {"hidden_size", 1 << 20, "'hidden_size' is 1048576"},
      {"intermediate_size", 4294967296, "'intermediate_size' is 4294967296"},
      {"head_dim", 65536, "'head_dim' is 65536, expected 2..1024"},
      {"num_attention_heads", 65536, "'num_attention_heads' is 65536"},
      {"num_key_value_heads", 0, "'num_key_value_heads' is 0, expected 1..4"},
      {"sliding_window", 2147483647, "'sliding_window' is 2147483647, expected 1..131072"},
      {"max_position_embeddings", 2147483647, "'max_position_embeddings' is 2147483647"},
      {"rope_theta", 1.0, "'rope_theta' is 1"},
      {"rope_theta", std::numeric_limits<double>::infinity(), "'rope_theta' is "},
      {"rms_norm_eps", 0.0, "'rms_norm_eps' is 0"},
      {"swiglu_limit", -1.0, "'swiglu_limit' is -1"},
      {"rope_scaling", {{"factor", -2.0}}, "'rope_scaling.factor' is -2"},
      {"rope_scaling", {{"beta_slow", 0.0}}, "'rope_scaling.beta_slow' is 0"},
      {"rope_scaling", {{"original_max_position_embeddings", 0}}, "'original_max_position_embeddings' is 0"},
      {"layer_types", json::array({"sliding_attention"}), "num_hidden_layers = 2 entries"},
      {"layer_types", json::array({"sliding_attention", 7}), "layer_types[1] is 7"},
      {"eos_token_id", -1, "'eos_token_id' is -1"},
  };
  for (const auto& c : cases) {
    json j = tiny_hf_config();
    j[c.key] = c.value;
    auto r = ModelConfig::from_json(j, "c.json");
    ASSERT_FALSE(r.ok()) << c.key << " = " << c.value.dump();
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos) << r.status().message();
    EXPECT_EQ(r.status().message().rfind("c.json: ", 0), 0u) << r.status().message();
  }
  // num_attention_heads x head_dim wrapped around in 32 bits (65536 x 65536 = 2^32 -> 0); each is in
  // range here, the product is not.
  json j = tiny_hf_config();
  j["num_attention_heads"] = 1024;
  j["num_key_value_heads"] = 1024;
  j["head_dim"] = 1024;
  auto r = ModelConfig::from_json(j, "c.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("num_attention_heads 1024 x head_dim 1024 = 1048576, expected at most 65536"),
            std::string::npos)
      << r.status().message();
  // The original flavour's context, initial_context_length x rope_scaling_factor, is checked before it
  // becomes an integer.
  json o = {{"num_hidden_layers", 2}, {"num_experts", 4}, {"experts_per_token", 2}, {"vocab_size", 64},
            {"hidden_size", 32},      {"intermediate_size", 32}, {"head_dim", 8}, {"num_attention_heads", 4},
            {"num_key_value_heads", 2}, {"sliding_window", 4}, {"initial_context_length", 4096},
            {"rope_scaling_factor", 1e300}};
  r = ModelConfig::from_json(o, "orig.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("rope_scaling_factor"), std::string::npos) << r.status().message();
  o["rope_scaling_factor"] = 1e6;
  r = ModelConfig::from_json(o, "orig.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("4096 x rope_scaling_factor"), std::string::npos) << r.status().message();
}

// Issue 17, item 3: an error about a deeply nested value must not serialize it (recursion: stack overflow).
TEST(Config, ErrorsDescribeValuesBriefly) {
  json deep = json::array();
  for (int i = 0; i < 200000; ++i) deep = json::array({std::move(deep)});
  json j = tiny_hf_config();
  j["hidden_size"] = std::move(deep);
  auto r = ModelConfig::from_json(j, "c.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'hidden_size' must be an integer, got an array of 1 elements"), std::string::npos)
      << r.status().message();
  j = tiny_hf_config();
  j["hidden_size"] = std::string(100000, 'z');
  r = ModelConfig::from_json(j, "c.json");
  ASSERT_FALSE(r.ok());
  EXPECT_LT(r.status().message().size(), 200u);
  // From text: 100k levels are refused by the parser's depth limit; duplicate keys are refused.
  std::string text = tiny_hf_config().dump();
  text.insert(1, R"("x": )" + std::string(100000, '[') + std::string(100000, ']') + ",");
  r = ModelConfig::from_json_text(text, "c.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nested deeper than 64"), std::string::npos) << r.status().message();
  text = tiny_hf_config().dump();
  text.insert(1, R"("hidden_size": 4096,)");
  r = ModelConfig::from_json_text(text, "c.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("\"hidden_size\" appears twice"), std::string::npos) << r.status().message();
  EXPECT_TRUE(ModelConfig::from_json_text(tiny_hf_config().dump(), "c.json").ok());
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

namespace {
// A native checkpoint converted from a TinyCheckpoint, removed at the end.
struct TinyNative {
  TinyCheckpoint src{tiny_hf_config()};
  fs::path dir = src.dir.string() + "-native";
  TinyNative() {
    ConvertOptions o;
    o.model_path = src.dir.string();
    o.output = dir.string();
    auto r = convert_checkpoint(o);
    EXPECT_TRUE(r.ok()) << r.status().message();
  }
  ~TinyNative() { fs::remove_all(dir); }
  fs::path shard() const { return dir / "model-00001-of-00001.safetensors"; }
  json manifest() const { return json::parse(std::ifstream(dir / "gptoss.json")); }
  void write_manifest(const json& m) const { std::ofstream(dir / "gptoss.json") << m.dump(); }
};

std::string open_error(const fs::path& d) {
  auto r = Checkpoint::open(d.string());
  return r.ok() ? "" : r.status().message();
}
}  // namespace

// Issue 17, item 6: the checksums are checked (verify, convert from native) and the manifest must
// describe the files exactly.
TEST(Checkpoint, NativeChecksumsAreVerified) {
  TinyNative n;
  auto ck = Checkpoint::open(n.dir.string());
  ASSERT_TRUE(ck.ok()) << ck.status().message();
  EXPECT_EQ(ck->layout(), CheckpointLayout::Native);
  EXPECT_EQ(ck->checksummed().size(), 41u);
  EXPECT_TRUE(ck->verify_checksums().ok());
  EXPECT_TRUE(verify_native(n.dir.string()).ok());
  // Flip one byte of the last tensor (lm_head): verify names it; a conversion from it writes nothing.
  {
    std::fstream f(n.shard(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put(char(0x01));
  }
  auto bad = Checkpoint::open(n.dir.string());
  ASSERT_TRUE(bad.ok());
  Status s = bad->verify_checksums();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("tensor 'lm_head.weight': checksum"), std::string::npos) << s.message();
  ConvertOptions o;
  o.model_path = n.dir.string();
  o.output = n.dir.string() + "-again";
  for (auto fmt : {OutputFormat::Native, OutputFormat::Safetensors}) {
    o.format = fmt;
    auto r = convert_checkpoint(o);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("'lm_head.weight': checksum"), std::string::npos) << r.status().message();
    EXPECT_FALSE(fs::exists(o.output));
  }
  // A non-native checkpoint has no checksums to verify.
  auto hf = Checkpoint::open(n.src.dir.string());
  ASSERT_TRUE(hf.ok());
  EXPECT_FALSE(hf->verify_checksums().ok());
}

TEST(Checkpoint, ManifestMustMatchTheFiles) {
  TinyNative n;
  const json good = n.manifest();
  struct Case {
    std::function<void(json&)> edit;
    const char* expect;
  };
  const Case cases[] = {
      {[](json& m) { m["tensors"] = json::array(); }, "lists no tensors"},
      {[](json& m) { m.erase("tensors"); }, "'tensors' is missing"},
      {[](json& m) { m["tensors"].erase(m["tensors"].begin() + 3); }, "is not listed in the manifest"},
      {[](json& m) { m["tensors"].push_back(m["tensors"][0]); }, "listed twice"},
      {[](json& m) { m["tensors"][0]["shape"] = {32, 64}; }, "manifest says"},
      {[](json& m) { m["tensors"][1]["dtype"] = "F32"; m["tensors"][1]["nbytes"] = 128; }, "manifest says F32"},
      {[](json& m) { m["tensors"][2]["offset"] = 0; }, "manifest says bytes [0"},
      {[](json& m) { m["tensors"][2]["file"] = "../x.safetensors"; }, "not a file name"},
      {[](json& m) { m["tensors"][2]["name"] = "model.layers.9.bogus"; }, "no safetensors file of the checkpoint has it"},
      {[](json& m) { m["tensors"][2]["xxh3"] = "xyz"; }, "16 lowercase hex digits"},
      {[](json& m) { m["tensors"][2]["nbytes"] = 1; }, "nbytes 1"},
      {[](json& m) { m["format"] = "other"; }, "expected \"gptoss-native\""},
      {[](json& m) { m["num_hidden_layers"] = 7; }, "num_hidden_layers 7"},
  };
  for (const auto& c : cases) {
    json m = good;
    c.edit(m);
    n.write_manifest(m);
    const std::string e = open_error(n.dir);
    EXPECT_NE(e.find(c.expect), std::string::npos) << "expected '" << c.expect << "', got: " << e;
  }
  n.write_manifest(good);
  EXPECT_EQ(open_error(n.dir), "");
}

// Issue 17, item 8: a shard truncated after it was opened is reported by name before it is read.
TEST(Checkpoint, NoticesAShardThatShrank) {
  TinyCheckpoint t(tiny_hf_config());
  auto ck = Checkpoint::open(t.dir.string());
  ASSERT_TRUE(ck.ok()) << ck.status().message();
  EXPECT_TRUE(ck->check_files_unchanged().ok());
  const fs::path shard = t.dir / "model.safetensors";
  fs::resize_file(shard, fs::file_size(shard) - 100);
  Status s = ck->check_files_unchanged();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("model.safetensors: file shrank while being read"), std::string::npos) << s.message();
}
