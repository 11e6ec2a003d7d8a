// What C++ can check of OrbaxWriter: the files and their sizes, the JSON it writes, and refusals.
// Whether Orbax restores the result is judged by Orbax itself in tests/py/test_orbax_writer.py.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "convert/orbax_writer.h"

using namespace gptoss;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// A fresh empty folder per test, removed afterwards.
class OrbaxWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("orbax_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir() const { return dir_.string(); }
  fs::path dir_;
};

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

std::vector<uint8_t> iota_bytes(size_t n, uint8_t start = 0) {
  std::vector<uint8_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

std::vector<TensorDecl> small_leaves() {
  return {{"model.layers.0.w", DType::BF16, {5, 4}},  // 40 bytes
          {"model.u", DType::U8, {6}},                // 6 bytes
          {"s", DType::F32, {}}};                     // 4 bytes
}

}  // namespace

TEST(OrbaxChunkShape, SplitsLeadingDimsOnly) {
  const std::vector<int64_t> embed = {201088, 2880};
  // 64 MiB / 5760 B = 11650 rows -> 18 chunks of 11172 rows (8 padding rows in the last one).
  EXPECT_EQ(orbax_chunk_shape(embed, 2, 64ull << 20), (std::vector<int64_t>{11172, 2880}));
  const std::vector<int64_t> small = {3, 4};
  EXPECT_EQ(orbax_chunk_shape(small, 4, 1024), small);  // fits: one chunk
  const std::vector<int64_t> experts = {3, 5, 1000};
  EXPECT_EQ(orbax_chunk_shape(experts, 1, 4096), (std::vector<int64_t>{1, 3, 1000}));
  const std::vector<int64_t> wide_row = {2, 100};  // one row over the limit: split the last dim
  EXPECT_EQ(orbax_chunk_shape(wide_row, 4, 64), (std::vector<int64_t>{1, 15}));
  EXPECT_EQ(orbax_chunk_shape(std::vector<int64_t>{0, 8}, 2, 64), (std::vector<int64_t>{1, 8}));
  EXPECT_TRUE(orbax_chunk_shape(std::vector<int64_t>{}, 4, 64).empty());
}

TEST_F(OrbaxWriterTest, WritesZarrArraysAndMetadata) {
  OrbaxWriterOptions opt;
  opt.max_chunk_bytes = 16;  // w: chunks of 2 rows x 4 bf16 -> 3 chunks, the last one padded
  opt.empty_dicts = {"model.layers.1"};
  auto w = OrbaxWriter::create(dir(), small_leaves(), opt);
  ASSERT_TRUE(w.ok()) << w.status().message();
  EXPECT_EQ((*w)->data_bytes_total(), 50u);
  auto bytes = iota_bytes(50);
  for (uint8_t b : bytes) ASSERT_TRUE((*w)->append(&b, 1).ok());  // one byte at a time
  ASSERT_TRUE((*w)->finish().ok());

  json zarray = json::parse(read_text(dir_ / "model.layers.0.w" / ".zarray"));
  EXPECT_EQ(zarray["shape"], json({5, 4}));
  EXPECT_EQ(zarray["chunks"], json({2, 4}));
  EXPECT_EQ(zarray["dtype"], "bfloat16");
  EXPECT_TRUE(zarray["compressor"].is_null());
  EXPECT_EQ(zarray["order"], "C");
  EXPECT_EQ(zarray["zarr_format"], 2);
  EXPECT_EQ(json::parse(read_text(dir_ / "model.u" / ".zarray"))["dtype"], "|u1");
  EXPECT_EQ(json::parse(read_text(dir_ / "s" / ".zarray"))["chunks"], json::array());

  const std::string c0 = read_text(dir_ / "model.layers.0.w" / "0.0");
  const std::string c2 = read_text(dir_ / "model.layers.0.w" / "2.0");
  ASSERT_EQ(c0.size(), 16u);
  ASSERT_EQ(c2.size(), 16u);
  EXPECT_EQ(uint8_t(c0[15]), 15);
  EXPECT_EQ(uint8_t(c2[7]), 39);  // row 4, the last byte of w
  EXPECT_EQ(c2.substr(8), std::string(8, '\0'));
  EXPECT_EQ(read_text(dir_ / "model.u" / "0"), std::string("\x28\x29\x2a\x2b\x2c\x2d"));
  EXPECT_EQ(read_text(dir_ / "s" / "0").size(), 4u);

  json meta = json::parse(read_text(dir_ / "_METADATA"));
  EXPECT_EQ(meta["use_ocdbt"], false);
  EXPECT_EQ(meta["use_zarr3"], false);
  const json& tree = meta["tree_metadata"];
  ASSERT_EQ(tree.size(), 4u);
  const json& w_entry = tree.at("('model', 'layers', '0', 'w')");
  EXPECT_EQ(w_entry["key_metadata"].size(), 4u);
  EXPECT_EQ(w_entry["key_metadata"][2], json({{"key", "0"}, {"key_type", 2}}));
  EXPECT_EQ(w_entry["value_metadata"]["value_type"], "np.ndarray");
  EXPECT_EQ(tree.at("('s',)")["value_metadata"]["skip_deserialize"], false);
  EXPECT_EQ(tree.at("('model', 'layers', '1')")["value_metadata"]["value_type"], "Dict");
  EXPECT_TRUE(fs::exists(dir_ / "_CHECKPOINT_METADATA"));
}

TEST_F(OrbaxWriterTest, SplitAppendsGiveTheSameChunks) {
  // Same leaves written once in one append, once across leaf boundaries in odd pieces.
  const std::vector<TensorDecl> leaves = {{"a", DType::F32, {7, 3}}, {"b", DType::U8, {2, 3, 5}}};
  auto bytes = iota_bytes(7 * 3 * 4 + 30, 1);
  OrbaxWriterOptions opt;
  opt.max_chunk_bytes = 20;
  for (int pass = 0; pass < 2; ++pass) {
    const fs::path sub = dir_ / std::to_string(pass);
    fs::create_directories(sub);
    auto w = OrbaxWriter::create(sub.string(), leaves, opt);
    ASSERT_TRUE(w.ok()) << w.status().message();
    if (pass == 0) {
      ASSERT_TRUE((*w)->append(bytes.data(), bytes.size()).ok());
    } else {
      for (size_t off = 0, n = 1; off < bytes.size(); off += n, n = n * 2 + 1) {
        n = std::min(n, bytes.size() - off);
        ASSERT_TRUE((*w)->append(bytes.data() + off, n).ok());
      }
    }
    ASSERT_TRUE((*w)->finish().ok());
  }
  // a: 12-byte rows, one per chunk: 7 chunks. b: chunks [1, 3, 5] -> one per index of dim 0.
  for (const char* f : {"a/0.0", "a/6.0", "b/0.0.0", "b/1.0.0"}) {
    EXPECT_TRUE(fs::exists(dir_ / "0" / f)) << f;
    EXPECT_EQ(read_text(dir_ / "0" / f), read_text(dir_ / "1" / f)) << f;
  }
  EXPECT_FALSE(fs::exists(dir_ / "0" / "a/7.0"));
}

TEST_F(OrbaxWriterTest, RefusesBytesPastTheEnd) {
  auto w = OrbaxWriter::create(dir(), small_leaves());
  ASSERT_TRUE(w.ok()) << w.status().message();
  auto bytes = iota_bytes(51);
  Status s = (*w)->append(bytes.data(), 51);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("51 bytes appended past the 50 data bytes"), std::string::npos) << s.message();
  ASSERT_TRUE((*w)->append(bytes.data(), 50).ok());
  ASSERT_TRUE((*w)->finish().ok());
  s = (*w)->append(bytes.data(), 1);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("append after finish"), std::string::npos) << s.message();
  EXPECT_FALSE((*w)->finish().ok());
}

TEST_F(OrbaxWriterTest, RefusesToFinishShort) {
  auto w = OrbaxWriter::create(dir(), small_leaves());
  ASSERT_TRUE(w.ok()) << w.status().message();
  auto bytes = iota_bytes(44);
  ASSERT_TRUE((*w)->append(bytes.data(), bytes.size()).ok());
  Status s = (*w)->finish();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("44 of 50 declared data bytes written (leaf 'model.u' incomplete)"), std::string::npos)
      << s.message();
  EXPECT_FALSE(fs::exists(dir_ / "_METADATA"));  // an unfinished checkpoint has no tree metadata
}

TEST_F(OrbaxWriterTest, RejectsBadDeclarations) {
  struct Case {
    std::vector<TensorDecl> leaves;
    std::vector<std::string> empty_dicts;
    const char* expect;
  };
  const Case cases[] = {
      {{{"a..b", DType::F32, {1}}}, {}, "empty path component"},
      {{{"a.b.", DType::F32, {1}}}, {}, "empty path component"},
      {{{"a/b", DType::F32, {1}}}, {}, "contains '/'"},
      {{{"a b", DType::F32, {1}}}, {}, "contains ' '"},
      {{{"a", DType::F32, {1}}, {"a", DType::F32, {1}}}, {}, "'a' is declared twice"},
      {{{"a", DType::F32, {1}}, {"a.b", DType::F32, {1}}}, {}, "lies under 'a', which is not a dict"},
      {{{"a.b", DType::F32, {1}}, {"a", DType::F32, {1}}}, {}, "'a' is also a dict"},
      {{{"a.b", DType::F32, {1}}}, {"a.b"}, "declared twice"},
      {{{"a.b", DType::F32, {1}}}, {"a"}, "'a' is also a dict"},
      {{{"_METADATA", DType::F32, {1}}}, {}, "reserves"},
      {{{"manifest.ocdbt", DType::F32, {1}}}, {}, "reserves"},
      {{{"a", DType::I32, {1}}}, {}, "dtype I32, expected F32, BF16 or U8"},
      {{{"a", DType::F32, {2, -1}}}, {}, "shape [2, -1]"},
      {{{"a", DType::U8, {1ll << 40, 1ll << 40}}}, {}, "overflows"},
      {{}, {}, "no leaves"},
  };
  for (const auto& c : cases) {
    OrbaxWriterOptions opt;
    opt.empty_dicts = c.empty_dicts;
    auto w = OrbaxWriter::create(dir(), c.leaves, opt);
    ASSERT_FALSE(w.ok()) << c.expect;
    EXPECT_NE(w.status().message().find(c.expect), std::string::npos)
        << "expected '" << c.expect << "' in: " << w.status().message();
  }
}

TEST_F(OrbaxWriterTest, NeedsAnExistingFolder) {
  auto w = OrbaxWriter::create((dir_ / "missing").string(), small_leaves());
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("not an existing folder"), std::string::npos) << w.status().message();
}
