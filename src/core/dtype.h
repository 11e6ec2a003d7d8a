// Element types that appear in gpt-oss checkpoints and our outputs, and bf16 <-> f32 conversion.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace gptoss {

enum class DType : uint8_t { F32, BF16, F16, U8, I8, I32, I64, U16, U32, F64, BOOL };

// Safetensors dtype string ("BF16") <-> DType. Returns nullopt for strings we do not accept.
std::optional<DType> dtype_from_string(std::string_view s);
std::string_view dtype_name(DType t);
size_t dtype_size(DType t);

// bf16 is the upper 16 bits of an IEEE f32. Decoding is exact.
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, as torch and numpy do; NaN stays NaN (quiet).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

}  // namespace gptoss
