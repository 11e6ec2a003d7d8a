#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "format/safetensors.h"

using namespace gptoss;
namespace fs = std::filesystem;

namespace {

// Writes a file made of an 8-byte length, the given header text, and `data_bytes` zero bytes.
std::vector<uint8_t> make_file(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> f(8 + header.size() + data_bytes, 0);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) f[size_t(i)] = uint8_t(n >> (8 * i));
  std::memcpy(f.data() + 8, header.data(), header.size());
  return f;
}

Result<SafetensorsHeader> parse(const std::string& header, size_t data_bytes) {
  auto f = make_file(header, data_bytes);
  return parse_safetensors_header(f, f.size(), "t.safetensors");
}

}  // namespace

TEST(Safetensors, ParsesValidHeader) {
  auto r = parse(R"({"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]},"__metadata__":{"format":"pt"}})", 12);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->tensors.size(), 1u);
  EXPECT_EQ(r->tensors[0].dtype, DType::BF16);
  EXPECT_EQ(r->metadata.at("format"), "pt");
}

struct BadCase {
  const char* header;
  size_t data;
  const char* expect;
};

TEST(Safetensors, RejectsMalformedHeaders) {
  const BadCase cases[] = {
      {"{not json", 0, "not valid JSON"},
      {"[1,2]", 0, "not a JSON object"},
      {R"({"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}})", 1, "unknown dtype"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4, "needs 8 bytes"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 2, "past the data section"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4, "reversed"},
      {R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", 6, "overlap"},
      {R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,4]}})", 4, "non-negative"},
      {R"({"a":{"dtype":"U8","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})", 4, "overflows"},
      {R"({"a":{"dtype":"U8","shape":[4]}})", 4, "data_offsets"},
      {R"({"__metadata__":{"k":1}})", 0, "not a string"},
  };
  for (const auto& c : cases) {
    auto r = parse(c.header, c.data);
    ASSERT_FALSE(r.ok()) << c.header;
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("t.safetensors"), std::string::npos);
  }
}

TEST(Safetensors, RejectsBadLength) {
  std::vector<uint8_t> f(16, 0);
  f[0] = 0xff;
  f[1] = 0xff;  // 65535 > file
  auto r = parse_safetensors_header(f, f.size(), "x");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("past the end"), std::string::npos);
  f.assign(8, 0xff);
  r = parse_safetensors_header(f, f.size(), "x");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("limit"), std::string::npos);
}

TEST(Safetensors, WriterRoundTrip) {
  auto dir = fs::temp_directory_path() / ("st_test_" + std::to_string(getpid()));
  fs::create_directories(dir);
  auto path = (dir / "a.safetensors").string();
  {
    auto w = SafetensorsWriter::create(path, {{"x", DType::F32, {2, 2}}, {"y", DType::U8, {3}}}, {{"format", "pt"}});
    ASSERT_TRUE(w.ok()) << w.status().message();
    float x[4] = {1, 2, 3, 4};
    uint8_t y[3] = {7, 8, 9};
    ASSERT_TRUE((*w)->append(x, 10).ok());  // chunks may straddle tensors
    ASSERT_TRUE((*w)->append(reinterpret_cast<uint8_t*>(x) + 10, 6).ok());
    ASSERT_TRUE((*w)->append(y, 3).ok());
    EXPECT_FALSE((*w)->append(y, 1).ok());
    ASSERT_TRUE((*w)->finish().ok());
  }
  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(f->data_offset() % 64, 0u);
  auto* x = f->find("x");
  ASSERT_NE(x, nullptr);
  float got[4];
  std::memcpy(got, f->data(*x).data(), 16);
  EXPECT_EQ(got[3], 4.0f);
  EXPECT_EQ(f->data(*f->find("y"))[2], 9);
  fs::remove_all(dir);
}

TEST(Safetensors, WriterRejectsShortData) {
  auto path = (fs::temp_directory_path() / ("st_short_" + std::to_string(getpid()))).string();
  auto w = SafetensorsWriter::create(path, {{"x", DType::F32, {2}}});
  ASSERT_TRUE(w.ok());
  float v = 1;
  ASSERT_TRUE((*w)->append(&v, 4).ok());
  auto s = (*w)->finish();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("4 of 8"), std::string::npos);
  std::filesystem::remove(path);
}

// The safetensors format's own rules (issue 17, item 7): names unique, offsets tiling the data section.
TEST(Safetensors, RejectsDuplicateTensorNames) {
  // nlohmann alone keeps one of the two entries ("last wins"); the header must be refused.
  auto r = parse(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", 8);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("appears twice"), std::string::npos) << r.status().message();
  // Duplicate keys inside an entry are refused too.
  r = parse(R"({"a":{"dtype":"U8","dtype":"F32","shape":[4],"data_offsets":[0,4]}})", 4);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("appears twice"), std::string::npos) << r.status().message();
}

TEST(Safetensors, OffsetsMustTileTheDataSection) {
  struct Case {
    const char* header;
    size_t data;
    const char* expect;
  };
  const Case cases[] = {
      // a gap between two tensors
      {R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[6,10]}})", 10, "no gaps"},
      // the first tensor does not start at 0
      {R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", 6, "no gaps"},
      // bytes after the last tensor
      {R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 9, "5 trailing bytes"},
      // an overlap between non-neighbours, hidden by a zero-size tensor sorted between them
      {R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"z":{"dtype":"U8","shape":[0],"data_offsets":[4,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", 8, "overlap"},
      // a zero-size tensor inside another one
      {R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"z":{"dtype":"U8","shape":[0],"data_offsets":[3,3]}})", 8, "overlap"},
      // no tensors but data bytes
      {R"({"__metadata__":{"k":"v"}})", 3, "trailing"},
  };
  for (const auto& c : cases) {
    auto r = parse(c.header, c.data);
    ASSERT_FALSE(r.ok()) << c.header;
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos) << r.status().message();
  }
  // Exact tilings pass, zero-size tensors at a boundary included.
  auto ok = parse(R"({"z":{"dtype":"U8","shape":[0],"data_offsets":[4,4]},"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2,2],"data_offsets":[4,8]}})", 8);
  EXPECT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_TRUE(parse("{}", 0).ok());
}

TEST(Safetensors, DeepNestingAndHugeNamesGiveShortErrors) {
  // 100k levels: parsed without recursion, refused at depth 64.
  std::string deep = R"({"a":)" + std::string(100000, '[') + std::string(100000, ']') + "}";
  auto r = parse(deep, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nested deeper"), std::string::npos) << r.status().message();
  // A 1 MB tensor name is cut in the message.
  const std::string name(1 << 20, 'x');
  r = parse(R"({")" + name + R"(":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}})", 1);
  ASSERT_FALSE(r.ok());
  EXPECT_LT(r.status().message().size(), 300u) << r.status().message().substr(0, 300);
}
