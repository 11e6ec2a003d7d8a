#include "convert/tensor_codec.h"

#include <algorithm>
#include <cstring>

#include "core/mxfp4.h"

namespace gptoss {

namespace {

// IEEE half -> f32, exact (subnormals included).
float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ffu, u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while (!(man & 0x400u));
      u = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float load_float(const uint8_t* p, DType t, size_t i) {
  switch (t) {
    case DType::F32: {
      float f;
      std::memcpy(&f, p + 4 * i, 4);
      return f;
    }
    case DType::BF16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return bf16_to_f32(h);
    }
    case DType::F16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return f16_to_f32(h);
    }
    default: return 0.0f;
  }
}

}  // namespace

bool is_float_dtype(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

void convert_floats(const void* src, DType from, void* dst, DType to, size_t n) {
  const auto* s = static_cast<const uint8_t*>(src);
  if (from == to) {
    std::memcpy(dst, src, n * dtype_size(from));
    return;
  }
  if (to == DType::F32) {
    float* d = static_cast<float*>(dst);
    if (from == DType::BF16) {
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, s + 2 * i, 2);
        d[i] = bf16_to_f32(h);
      }
    } else {
      for (size_t i = 0; i < n; ++i) d[i] = load_float(s, from, i);
    }
    return;
  }
  // to == BF16 (F16 output is never requested)
  uint16_t* d = static_cast<uint16_t*>(dst);
  for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(load_float(s, from, i));
}

void mxfp4_to_dense_transposed(const uint8_t* blocks, const uint8_t* scales, int64_t rows, int64_t cols,
                               int64_t col_begin, int64_t col_end, DType out, void* dst) {
  // Tiles of 16 rows x 32 columns: decode 16 rows of one block each, then store each column's 16
  // values contiguously (one 64-byte line of f32), so the transposed writes stay cache friendly.
  constexpr int kTile = 16;
  const int64_t nblk = cols / kMxfp4BlockElems;
  const int64_t b0 = col_begin / kMxfp4BlockElems, b1 = col_end / kMxfp4BlockElems;
  float tile[kTile][kMxfp4BlockElems];
  float* d32 = static_cast<float*>(dst);
  uint16_t* d16 = static_cast<uint16_t*>(dst);
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    const int nr = int(std::min<int64_t>(kTile, rows - r0));
    for (int64_t b = b0; b < b1; ++b) {
      for (int i = 0; i < nr; ++i) {
        const int64_t r = r0 + i;
        mxfp4_decode_row(blocks + (r * nblk + b) * kMxfp4BlockBytes, scales + r * nblk + b, kMxfp4BlockElems,
                         tile[i]);
      }
      const int64_t c_out0 = (b - b0) * kMxfp4BlockElems;
      if (out == DType::F32) {
        for (int c = 0; c < kMxfp4BlockElems; ++c) {
          float* row = d32 + (c_out0 + c) * rows + r0;
          for (int i = 0; i < nr; ++i) row[i] = tile[i][c];
        }
      } else {
        for (int c = 0; c < kMxfp4BlockElems; ++c) {
          uint16_t* row = d16 + (c_out0 + c) * rows + r0;
          // Exact: every MXFP4 value has at most 2 significant bits, so truncation equals rounding.
          for (int i = 0; i < nr; ++i) {
            uint32_t u;
            std::memcpy(&u, &tile[i][c], 4);
            row[i] = uint16_t(u >> 16);
          }
        }
      }
    }
  }
}

}  // namespace gptoss
