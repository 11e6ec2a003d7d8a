// Constants of the o200k / o200k_harmony encodings, embedded so that the library needs no data
// files besides the rank file or tokenizer.json (see docs/MODEL.md §5).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gptoss::o200k {

// o200k_base's pre-tokenization regex (the same string is in gpt-oss's tokenizer.json).
inline constexpr std::string_view kPattern =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|\\p{N}{1,3}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*"
    "|\\s*[\\r\\n]+"
    "|\\s+(?!\\S)"
    "|\\s+";

inline constexpr uint32_t kNumBpeTokens = 199998;
inline constexpr uint32_t kFirstSpecialId = 199998;
// o200k_harmony has special ids 199998..201087: 201,088 ids, the model's vocabulary size.
inline constexpr uint32_t kHarmonyTokenCount = 201088;

struct SpecialToken {
  std::string name;
  uint32_t id;
  bool canonical;  // the name decode() gives the id (200018 has two names)
};

// The o200k_harmony specials: named ones, then "<|reserved_N|>" for every other id up to 201087.
// 200018 is "<|endofprompt|>" (as in o200k_base and the HF tokenizer) and also encodes from
// "<|reserved_200018|>".
inline std::vector<SpecialToken> harmony_special_tokens() {
  struct Named {
    uint32_t id;
    const char* name;
  };
  static constexpr Named kNamed[] = {
      {199998, "<|startoftext|>"}, {199999, "<|endoftext|>"}, {200002, "<|return|>"},
      {200003, "<|constrain|>"},   {200005, "<|channel|>"},   {200006, "<|start|>"},
      {200007, "<|end|>"},         {200008, "<|message|>"},   {200012, "<|call|>"},
      {200018, "<|endofprompt|>"},
  };
  std::vector<SpecialToken> out;
  out.reserve(kHarmonyTokenCount - kFirstSpecialId + 1);
  for (uint32_t id = kFirstSpecialId; id < kHarmonyTokenCount; ++id) {
    const char* name = nullptr;
    for (const Named& n : kNamed) {
      if (n.id == id) name = n.name;
    }
    if (name) out.push_back({name, id, true});
    if (!name || id == 200018) out.push_back({"<|reserved_" + std::to_string(id) + "|>", id, name == nullptr});
  }
  return out;
}

}  // namespace gptoss::o200k
