#include "core/npy.h"

#include <cstring>
#include <fstream>
#include <regex>

namespace gptoss {

Status npy_write_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  std::string dims;
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dims += std::to_string(shape[i]) + (shape.size() == 1 ? "," : i + 1 < shape.size() ? ", " : "");
    n *= shape[i];
  }
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Magic (6) + version (2) + length (2) + header + '\n' padded to a multiple of 64.
  const size_t total = ((10 + header.size() + 1 + 63) / 64) * 64;
  header.resize(total - 10 - 1, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f) return Error("{}: cannot create", path);
  const char magic[8] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
  f.write(magic, 8);
  const uint16_t len = uint16_t(header.size());
  const char lb[2] = {char(len & 0xff), char(len >> 8)};
  f.write(lb, 2);
  f.write(header.data(), std::streamsize(header.size()));
  f.write(reinterpret_cast<const char*>(data), std::streamsize(n * 4));
  if (!f) return Error("{}: write failed", path);
  return {};
}

Result<NpyArray> npy_read_f32(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Error("{}: cannot open", path);
  char pre[10];
  if (!f.read(pre, 10) || std::memcmp(pre, "\x93NUMPY", 6) != 0) return Error("{}: not a .npy file", path);
  size_t hl = size_t(uint8_t(pre[8])) | size_t(uint8_t(pre[9])) << 8;
  if (pre[6] != 1) return Error("{}: only .npy format 1.0 is supported", path);
  std::string header(hl, '\0');
  if (!f.read(header.data(), std::streamsize(hl))) return Error("{}: truncated header", path);
  if (header.find("'descr': '<f4'") == std::string::npos || header.find("'fortran_order': False") == std::string::npos)
    return Error("{}: expected little-endian float32 in C order", path);
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'shape': \\(([0-9, ]*)\\)"))) return Error("{}: no shape", path);
  NpyArray a;
  int64_t n = 1;
  std::string s = m[1];
  for (size_t i = 0; i < s.size();) {
    size_t j = s.find(',', i);
    std::string tok = s.substr(i, j == std::string::npos ? std::string::npos : j - i);
    if (tok.find_first_of("0123456789") != std::string::npos) {
      a.shape.push_back(std::stoll(tok));
      n *= a.shape.back();
    }
    if (j == std::string::npos) break;
    i = j + 1;
  }
  a.data.resize(size_t(n));
  if (!f.read(reinterpret_cast<char*>(a.data.data()), std::streamsize(n * 4))) return Error("{}: truncated data", path);
  return a;
}

}  // namespace gptoss
