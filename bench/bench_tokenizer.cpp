// Encoding throughput of the o200k tokenizer, single thread.
// Usage: bench_tokenizer TOKENIZER CORPUS [REPEATS]
//   TOKENIZER: tokenizer.json or o200k_base.tiktoken; CORPUS: documents separated by NUL bytes
//   (bench/bench_tokenizer.py writes one from tests/py/make_corpus.py and compares with tiktoken).
// Prints the best of REPEATS passes (default 5) as MB/s (10^6 bytes of input per second).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s TOKENIZER CORPUS [REPEATS]\n", argv[0]);
    return 2;
  }
  const int repeats = argc > 3 ? std::atoi(argv[3]) : 5;
  auto tok = gptoss::Tokenizer::from_file(argv[1]);
  if (!tok.ok()) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", tok.status().message().c_str());
    return 1;
  }
  std::ifstream f(argv[2], std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "bench_tokenizer: cannot open %s\n", argv[2]);
    return 1;
  }
  std::ostringstream ss;
  ss << f.rdbuf();
  const std::string corpus = ss.str();
  std::vector<std::string_view> docs;
  for (size_t pos = 0; pos < corpus.size();) {
    size_t end = corpus.find('\0', pos);
    if (end == std::string::npos) end = corpus.size();
    docs.emplace_back(corpus.data() + pos, end - pos);
    pos = end + 1;
  }
  size_t bytes = 0;
  for (auto d : docs) bytes += d.size();
  double best = 1e30;
  size_t num_tokens = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    size_t n = 0;
    for (auto d : docs) n += tok->encode_ordinary(d).size();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
    num_tokens = n;
  }
  std::printf("gptoss: %zu docs, %.2f MB, %zu tokens, best of %d: %.3f s, %.2f MB/s\n", docs.size(), bytes / 1e6,
              num_tokens, repeats, best, bytes / 1e6 / best);
  return 0;
}
