// The public headers (include/gptoss/) are the API as a user of the library sees it: each includes only
// standard headers and other public headers, never the library's internals (src/) or a third-party library,
// and compiles on its own with nothing but include/ on the include path.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

const fs::path kInclude = fs::path(GPTOSS_SOURCE_DIR) / "include";

std::vector<fs::path> public_headers() {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(kInclude / "gptoss"))
    if (e.path().extension() == ".h") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(PublicHeaders, IncludeOnlyStandardAndPublicHeaders) {
  const auto headers = public_headers();
  ASSERT_FALSE(headers.empty()) << kInclude;
  // Standard library headers have neither a directory nor an extension (<cstdint>, <memory>).
  const std::regex include_line(R"(^\s*#\s*include\s*([<"])([^>"]+)[>"])"), standard("[a-z_]+");
  for (const auto& h : headers) {
    std::ifstream f(h);
    std::string line;
    for (int n = 1; std::getline(f, line); ++n) {
      std::smatch m;
      if (!std::regex_search(line, m, include_line)) continue;
      const std::string name = m[2];
      if (m[1] == "<")
        EXPECT_TRUE(std::regex_match(name, standard))
            << h.filename() << ":" << n << ": <" << name << "> is not a standard header";
      else
        EXPECT_TRUE(name.starts_with("gptoss/") && fs::exists(kInclude / name))
            << h.filename() << ":" << n << ": \"" << name << "\" is not a public header (include/gptoss/)";
    }
  }
}

TEST(PublicHeaders, EachCompilesAloneWithOnlyIncludeOnThePath) {
  const fs::path dir = fs::path(testing::TempDir()) / "gptoss_public_headers";
  fs::create_directories(dir);
  for (const auto& h : public_headers()) {
    const fs::path src = dir / (h.stem().string() + "_alone.cpp");
    std::ofstream(src) << "#include \"gptoss/" << h.filename().string() << "\"\n";
    const std::string cmd = std::string(GPTOSS_CXX) + " -std=c++20 -fsyntax-only -Wall -Wextra -Wpedantic -Werror -I " +
                            kInclude.string() + " " + src.string() + " 2>&1";
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr) << cmd;
    char buf[4096];
    while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    EXPECT_EQ(pclose(p), 0) << h.filename() << " does not compile alone:\n" << cmd << "\n" << out;
  }
}

}  // namespace
