// UTF-8 helpers shared by the tokenizer (splitting input into valid runs) and the stream decoder
// (holding back an incomplete trailing sequence). Validity follows RFC 3629: no overlong forms, no
// surrogates (U+D800..U+DFFF), nothing above U+10FFFF.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace gptoss::utf8 {

// Length of the valid UTF-8 sequence starting at s[i], or 0 when the bytes there do not start one
// (invalid lead byte, bad continuation, overlong, surrogate, > U+10FFFF, or truncated by the end of s).
inline size_t valid_sequence_length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = b(i);
  if (c < 0x80) return 1;
  size_t len;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;  // overlong
    if (c == 0xED) hi = 0x9F;  // surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;  // overlong
    if (c == 0xF4) hi = 0x8F;  // > U+10FFFF
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < len; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
  }
  return len;
}

// Number of leading bytes of s that form complete, valid UTF-8.
inline size_t valid_prefix_length(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= s.size()) {
      uint64_t w = 0;
      for (int k = 0; k < 8; ++k) w |= static_cast<uint64_t>(static_cast<uint8_t>(s[i + k])) << (8 * k);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= s.size()) break;
    const size_t n = valid_sequence_length(s, i);
    if (n == 0) return i;
    i += n;
  }
  return s.size();
}

inline bool is_valid(std::string_view s) { return valid_prefix_length(s) == s.size(); }

// What a lead byte promises: the sequence length (0: not a lead byte) and the valid range of the
// second byte (narrower than 80..BF after E0, ED, F0, F4: no overlongs, surrogates or > U+10FFFF).
struct LeadByte {
  size_t len;
  uint8_t lo, hi;
};
inline LeadByte lead_byte(uint8_t c) {
  if (c >= 0xC2 && c <= 0xDF) return {2, 0x80, 0xBF};
  if (c >= 0xE0 && c <= 0xEF) return {3, uint8_t(c == 0xE0 ? 0xA0 : 0x80), uint8_t(c == 0xED ? 0x9F : 0xBF)};
  if (c >= 0xF0 && c <= 0xF4) return {4, uint8_t(c == 0xF0 ? 0x90 : 0x80), uint8_t(c == 0xF4 ? 0x8F : 0xBF)};
  return {0, 0, 0};
}

// True when s[i..] is a proper prefix of some valid sequence (it could still become valid once more
// bytes arrive), e.g. "\xE4\xB8" but not "\xE4\x41" or "\xC0".
inline bool is_incomplete_prefix(std::string_view s, size_t i) {
  const size_t avail = s.size() - i;
  if (avail == 0 || avail >= 4) return false;
  const uint8_t c = static_cast<uint8_t>(s[i]);
  const LeadByte lb = lead_byte(c);
  if (lb.len == 0) return false;
  const size_t len = lb.len;
  const uint8_t lo = lb.lo, hi = lb.hi;
  if (avail >= len) return false;
  if (avail >= 2) {
    const uint8_t c1 = static_cast<uint8_t>(s[i + 1]);
    if (c1 < lo || c1 > hi) return false;
  }
  for (size_t k = 2; k < avail; ++k) {
    if ((static_cast<uint8_t>(s[i + k]) & 0xC0) != 0x80) return false;
  }
  return true;
}

}  // namespace gptoss::utf8
