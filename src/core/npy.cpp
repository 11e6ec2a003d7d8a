#include "core/npy.h"

#include <zip.h>

#include <cstring>
#include <fstream>
#include <regex>

namespace gptoss {

namespace {

// The .npy header of a float32 C-order array: magic, version 1.0, length, the dict padded with spaces and a
// '\n' so that the data starts at a multiple of 64 bytes.
std::string npy_header(const std::vector<int64_t>& shape) {
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i)
    dims += std::to_string(shape[i]) + (shape.size() == 1 ? "," : i + 1 < shape.size() ? ", " : "");
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t total = ((10 + dict.size() + 1 + 63) / 64) * 64;
  dict.resize(total - 10 - 1, ' ');
  dict += '\n';
  const uint16_t len = uint16_t(dict.size());
  return std::string("\x93NUMPY\x01\x00", 8) + char(len & 0xff) + char(len >> 8) + dict;
}

size_t elements(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= size_t(d);
  return n;
}

}  // namespace

Status npy_write_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  const std::string header = npy_header(shape);
  std::ofstream f(path, std::ios::binary);
  if (!f) return Error("{}: cannot create", path);
  f.write(header.data(), std::streamsize(header.size()));
  f.write(reinterpret_cast<const char*>(data), std::streamsize(elements(shape) * 4));
  if (!f) return Error("{}: write failed", path);
  return {};
}

// An .npz is a zip archive of NAME.npy members (numpy.savez: stored, not compressed); libzip writes the archive.
Status npz_write_f32(const std::string& path, const std::vector<NpzMember>& members) {
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  if (!z) {
    zip_error_t ze;
    zip_error_init_with_code(&ze, err);
    Status st = Error("{}: cannot create: {}", path, zip_error_strerror(&ze));
    zip_error_fini(&ze);
    return st;
  }
  // Each member's bytes must stay alive until zip_close writes them.
  std::vector<std::string> bytes;
  bytes.reserve(members.size());
  for (const NpzMember& m : members) {
    std::string b = npy_header(m.shape);
    b.append(reinterpret_cast<const char*>(m.data), elements(m.shape) * 4);
    bytes.push_back(std::move(b));
    zip_source_t* src = zip_source_buffer(z, bytes.back().data(), bytes.back().size(), 0);
    const zip_int64_t idx = src ? zip_file_add(z, (m.name + ".npy").c_str(), src, ZIP_FL_OVERWRITE) : -1;
    if (idx < 0 || zip_set_file_compression(z, zip_uint64_t(idx), ZIP_CM_STORE, 0) < 0) {
      if (src && idx < 0) zip_source_free(src);
      Status st = Error("{}: cannot add {}.npy: {}", path, m.name, zip_strerror(z));
      zip_discard(z);
      return st;
    }
  }
  if (zip_close(z) < 0) {
    Status st = Error("{}: write failed: {}", path, zip_strerror(z));
    zip_discard(z);
    return st;
  }
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
