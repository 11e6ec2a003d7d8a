#include "tokenizer/tokenizer.h"

#include "core/file_io.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "tokenizer/bpe.h"
#include "tokenizer/o200k.h"
#include "tokenizer/utf8.h"

namespace gptoss {

namespace {

constexpr uint32_t kUndecodable = 0xFFFFFFFFu;
// Bounds what a (possibly hostile) tokenizer file can make us allocate.
constexpr uint32_t kMaxTokenCount = 1u << 24;

struct Pcre2CodeDeleter {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};

// PCRE2's \s in UCP mode is Perl space (Z category + \t\n\v\f\r); tiktoken (Rust regex) and
// Hugging Face (Oniguruma) use Unicode White_Space, which also has U+0085. Spell it out.
constexpr std::string_view kWhiteSpaceClassBody =
    "\\x{09}-\\x{0D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

// Rewrites \s and \S (outside and inside character classes) to the White_Space set.
Result<std::string> rewrite_whitespace_escapes(std::string_view pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[i + 1];
      ++i;
      if (e == 's') {
        if (in_class) {
          out += kWhiteSpaceClassBody;
        } else {
          out += "[";
          out += kWhiteSpaceClassBody;
          out += "]";
        }
      } else if (e == 'S') {
        if (in_class) return Error("\\S inside a character class is not supported");
        out += "[^";
        out += kWhiteSpaceClassBody;
        out += "]";
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

// GPT-2's byte-level alphabet: printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100.. in byte order. Returns the byte of a code point, or -1.
int byte_level_char_to_byte(uint32_t cp) {
  static const auto table = [] {
    std::vector<int> t(512, -1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      if (printable) {
        t[b] = b;
      } else {
        t[256 + n++] = b;
      }
    }
    return t;
  }();
  return cp < table.size() ? table[cp] : -1;
}

Result<std::string> byte_level_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const size_t n = utf8::valid_sequence_length(s, i);
    if (n == 0) return Error("invalid UTF-8 in token '{}'", s);
    uint32_t cp = static_cast<uint8_t>(s[i]);
    if (n > 1) {
      cp &= (0x7Fu >> n);
      for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3F);
    }
    const int b = byte_level_char_to_byte(cp);
    if (b < 0) return Error("token '{}' has U+{:04X}, which is not in the byte-level alphabet", s, cp);
    out += static_cast<char>(b);
    i += n;
  }
  return out;
}

Result<std::string> base64_decode(std::string_view s) {
  static const auto table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    const char* alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[static_cast<uint8_t>(alpha[i])] = static_cast<int8_t>(i);
    return t;
  }();
  while (!s.empty() && s.back() == '=') s.remove_suffix(1);
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    const int v = table[static_cast<uint8_t>(c)];
    if (v < 0) return Error("invalid base64 character '{}'", c);
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  if (bits >= 6) return Error("truncated base64 '{}'", s);
  return out;
}

}  // namespace

struct Tokenizer::Impl {
  bpe::RankTable ranks;
  // Decode table, indexed by id: bytes at decode_arena[offset, offset + len), or len == kUndecodable.
  std::string decode_arena;
  std::vector<uint32_t> decode_offset, decode_len;
  std::vector<bool> special;
  std::unordered_map<std::string, TokenId> special_ids;
  // True when every special string is "<|...|>" with no "|>" inside, so encode() can find them by
  // scanning for "<|" (see find_special).
  bool specials_bracketed = true;
  uint32_t num_bpe = 0;
  std::unique_ptr<pcre2_code, Pcre2CodeDeleter> regex;

  Status compile_regex(std::string_view pattern) {
    GPTOSS_ASSIGN(std::string rewritten, rewrite_whitespace_escapes(pattern));
    int err = 0;
    PCRE2_SIZE err_off = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten.data()), rewritten.size(),
                                     PCRE2_UTF | PCRE2_UCP, &err, &err_off, nullptr);
    if (!code) {
      PCRE2_UCHAR buf[256];
      pcre2_get_error_message(err, buf, sizeof(buf));
      return Error("pre-tokenizer regex: {} at offset {}", reinterpret_cast<const char*>(buf), err_off);
    }
    regex.reset(code);
    if (pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) != 0) {
      return Error("pre-tokenizer regex: PCRE2 JIT compilation failed");
    }
    return Status();
  }

  void set_token(TokenId id, std::string_view bytes, bool is_special) {
    if (id >= decode_len.size()) {
      decode_offset.resize(id + 1, 0);
      decode_len.resize(id + 1, kUndecodable);
      special.resize(id + 1, false);
    }
    decode_offset[id] = static_cast<uint32_t>(decode_arena.size());
    decode_len[id] = static_cast<uint32_t>(bytes.size());
    decode_arena.append(bytes);
    special[id] = is_special;
  }

  Status add_special(std::string_view name, TokenId id, bool decodes_as_this_name) {
    if (id >= kMaxTokenCount) return Error("special token '{}': id {} is too large", name, id);
    if (id < decode_len.size() && decode_len[id] != kUndecodable && !special[id]) {
      return Error("special token '{}': id {} is already an ordinary token", name, id);
    }
    if (name.empty()) return Error("special token with id {} has an empty string", id);
    if (!special_ids.emplace(std::string(name), id).second) {
      return Error("special token '{}' appears twice", name);
    }
    if (!(name.size() >= 4 && name.substr(0, 2) == "<|" && name.substr(name.size() - 2) == "|>" &&
          name.substr(2, name.size() - 4).find("|>") == std::string_view::npos)) {
      specials_bracketed = false;
    }
    if (decodes_as_this_name || id >= decode_len.size() || decode_len[id] == kUndecodable) set_token(id, name, true);
    return Status();
  }

  // Checks shared by both loaders once the BPE ranks are in.
  Status check_bpe() const {
    for (int b = 0; b < 256; ++b) {
      const char c = static_cast<char>(b);
      if (ranks.find(std::string_view(&c, 1)) == bpe::kNoRank) {
        return Error("no token for the single byte 0x{:02X} (byte-level BPE needs all 256)", b);
      }
    }
    return Status();
  }

  // The next allowed special at or after `pos`: {start, length, id}, or start == npos.
  struct SpecialMatch {
    size_t start = std::string_view::npos;
    size_t len = 0;
    TokenId id = 0;
  };
  SpecialMatch find_special(std::string_view text, size_t pos, const AllowedSpecial& allowed) const {
    const auto allowed_name = [&](std::string_view name) {
      return allowed.all || std::find(allowed.names.begin(), allowed.names.end(), name) != allowed.names.end();
    };
    if (specials_bracketed) {
      while (true) {
        const size_t open = text.find("<|", pos);
        if (open == std::string_view::npos) return {};
        const size_t close = text.find("|>", open + 2);
        if (close == std::string_view::npos) return {};
        const std::string_view cand = text.substr(open, close + 2 - open);
        auto it = special_ids.find(std::string(cand));
        if (it != special_ids.end() && allowed_name(cand)) return {open, cand.size(), it->second};
        pos = open + 1;
      }
    }
    // General case: leftmost, then longest, among the allowed specials.
    SpecialMatch best;
    for (const auto& [name, id] : special_ids) {
      if (!allowed_name(name)) continue;
      const size_t at = text.find(name, pos);
      if (at == std::string_view::npos) continue;
      if (at < best.start || (at == best.start && name.size() > best.len)) best = {at, name.size(), id};
    }
    return best;
  }

  void encode_piece(std::string_view piece, bpe::MergeScratch& scratch, std::vector<TokenId>& out) const {
    const uint32_t r = ranks.find(piece);
    if (r != bpe::kNoRank) {
      out.push_back(r);
      return;
    }
    bpe::byte_pair_encode(ranks, piece, scratch, out);
  }

  // Pre-tokenizes valid UTF-8 `run` with the regex and BPE-encodes each piece. Text the regex
  // does not match is dropped, as tiktoken and Hugging Face do (the o200k pattern matches every
  // character).
  void encode_valid_run(std::string_view run, bpe::MergeScratch& scratch, std::vector<TokenId>& out) const;

  void encode_ordinary(std::string_view text, bpe::MergeScratch& scratch, std::vector<TokenId>& out) const {
    size_t i = 0;
    while (i < text.size()) {
      const size_t valid = utf8::valid_prefix_length(text.substr(i));
      if (valid > 0) encode_valid_run(text.substr(i, valid), scratch, out);
      i += valid;
      if (i < text.size()) {
        // A byte that starts no valid sequence: its single-byte token.
        out.push_back(ranks.find(text.substr(i, 1)));
        ++i;
      }
    }
  }
};

namespace {
// Per-thread PCRE2 match state, reused across calls (no allocation per piece or per call).
struct MatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchState() {
    data = pcre2_match_data_create(32, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~MatchState() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
  MatchState(const MatchState&) = delete;
  MatchState& operator=(const MatchState&) = delete;
};
MatchState& match_state() {
  thread_local MatchState state;
  return state;
}
}  // namespace

void Tokenizer::Impl::encode_valid_run(std::string_view run, bpe::MergeScratch& scratch,
                                       std::vector<TokenId>& out) const {
  MatchState& ms = match_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(run.data());
  size_t off = 0;
  while (off < run.size()) {
    const int rc = pcre2_jit_match(regex.get(), subject, run.size(), off, 0, ms.data, ms.context);
    if (rc < 0) {
      if (rc == PCRE2_ERROR_NOMATCH) return;
      // JIT stack exhausted (pathological regex from a file): keep every byte by encoding the
      // rest as one piece rather than dropping text.
      encode_piece(run.substr(off), scratch, out);
      return;
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(ms.data);
    const size_t start = ov[0], end = ov[1];
    if (end <= start) {
      // Empty match (only possible with a custom regex): step over one character.
      const size_t n = utf8::valid_sequence_length(run, std::max(start, off));
      off = std::max(start, off) + std::max<size_t>(n, 1);
      continue;
    }
    encode_piece(run.substr(start, end - start), scratch, out);
    off = end;
  }
}

// ---------------------------------------------------------------------------------------------
// Loading

namespace {
// model.vocab's entries in file order, and whether the file had the object at all.
struct VocabEntries {
  bool present = false, object = false;
  std::vector<std::pair<std::string, nlohmann::json>> items;
};

// Parses tokenizer.json without building what loading does not need: model.merges (~450k pairs; with
// ignore_merges a merge's rank is its token id) is skipped, and model.vocab's ~200k entries are collected
// into a vector instead of a JSON object (a sorted map). That is most of the file and of the parse time.
nlohmann::json parse_hf_json(std::string_view json_text, VocabEntries& vocab) {
  using nlohmann::json;
  using Event = json::parse_event_t;
  // path[d]: the key last read at depth d. nlohmann reports an object's keys and values at the depth of the
  // object plus one (the root's keys at 1) and a container's start at the depth of its parent.
  std::vector<std::string> path;
  std::string vocab_key;
  auto model_field = [&](std::string_view field) {
    return path.size() >= 3 && path[1] == "model" && path[2] == field;
  };
  const json::parser_callback_t cb = [&](int depth, Event event, json& parsed) {
    if (event == Event::key) {
      if (path.size() < size_t(depth) + 1) path.resize(size_t(depth) + 1);
      path[size_t(depth)] = parsed.get<std::string>();
      if (depth == 2 && model_field("vocab")) vocab.present = true;
      if (depth == 3 && model_field("vocab")) {
        vocab_key = std::move(path[3]);
        return false;  // the entry goes to `vocab`, not into the object
      }
      return true;
    }
    if (depth == 2 && event == Event::object_start && model_field("vocab")) vocab.object = true;
    // Every container under model.merges is dropped at its start, and with it everything inside.
    if (depth >= 2 && (event == Event::array_start || event == Event::object_start) && model_field("merges"))
      return false;
    if (depth == 3 && event == Event::value && model_field("vocab")) {
      vocab.items.emplace_back(std::move(vocab_key), std::move(parsed));
      return false;
    }
    return true;
  };
  return json::parse(json_text, cb, /*allow_exceptions=*/false);
}
}  // namespace

Result<Tokenizer> Tokenizer::from_hf_json_text(std::string_view json_text, std::string_view source) {
  using nlohmann::json;
  VocabEntries vocab_entries;
  const json root = parse_hf_json(json_text, vocab_entries);
  if (root.is_discarded()) return Error("{}: not valid JSON", source);
  auto impl = std::make_shared<Impl>();
  // Type mismatches in a hostile file surface as nlohmann exceptions; turn them into errors.
  try {
    if (!root.is_object()) return Error("{}: expected a JSON object at the top level", source);
    if (!root.contains("model") || !root["model"].is_object()) return Error("{}: no \"model\" object", source);
    const json& model = root["model"];
    if (model.value("type", std::string()) != "BPE") {
      return Error("{}: model.type is '{}', expected 'BPE'", source,
                   model.contains("type") ? model["type"].dump() : "missing");
    }
    if (!model.value("ignore_merges", false)) {
      return Error("{}: model.ignore_merges must be true (tiktoken-style BPE, merges ranked by token id)", source);
    }
    if (root.contains("normalizer") && !root["normalizer"].is_null()) {
      return Error("{}: normalizers are not supported (expected \"normalizer\": null)", source);
    }
    // pre_tokenizer: Sequence[Split(Regex, Isolated), ByteLevel(use_regex = false)].
    std::string pattern;
    bool byte_level = false;
    if (!root.contains("pre_tokenizer") || !root["pre_tokenizer"].is_object()) {
      return Error("{}: no \"pre_tokenizer\" object", source);
    }
    const json& pre = root["pre_tokenizer"];
    std::vector<const json*> steps;
    if (pre.value("type", std::string()) == "Sequence" && pre.contains("pretokenizers") &&
        pre["pretokenizers"].is_array()) {
      for (const json& s : pre["pretokenizers"]) steps.push_back(&s);
    } else {
      steps.push_back(&pre);
    }
    for (const json* s : steps) {
      if (!s->is_object()) return Error("{}: pre_tokenizer step is not an object", source);
      const std::string type = s->value("type", std::string());
      if (type == "Split") {
        if (!pattern.empty()) return Error("{}: more than one Split pre-tokenizer", source);
        if (!s->contains("pattern") || !(*s)["pattern"].is_object() || !(*s)["pattern"].contains("Regex") ||
            !(*s)["pattern"]["Regex"].is_string()) {
          return Error("{}: Split pre-tokenizer without a \"Regex\" pattern", source);
        }
        pattern = (*s)["pattern"]["Regex"].get<std::string>();
        if (s->value("behavior", std::string()) != "Isolated" || s->value("invert", false)) {
          return Error("{}: Split pre-tokenizer must have behavior Isolated and invert false", source);
        }
      } else if (type == "ByteLevel") {
        if (s->value("use_regex", true)) {
          return Error("{}: ByteLevel pre-tokenizer with use_regex = true is not supported", source);
        }
        if (s->value("add_prefix_space", false)) {
          return Error("{}: ByteLevel pre-tokenizer with add_prefix_space = true is not supported", source);
        }
        byte_level = true;
      } else {
        return Error("{}: unsupported pre-tokenizer type '{}'", source, type);
      }
    }
    if (pattern.empty() || !byte_level) {
      return Error("{}: pre_tokenizer must be a Split(Regex) followed by ByteLevel", source);
    }
    GPTOSS_TRY(impl->compile_regex(pattern).with_context(source));

    if (!vocab_entries.present || !vocab_entries.object) return Error("{}: no model.vocab object", source);
    const auto& vocab = vocab_entries.items;
    if (vocab.size() >= kMaxTokenCount) return Error("{}: vocab has {} entries, too many", source, vocab.size());
    const uint32_t n = static_cast<uint32_t>(vocab.size());
    impl->ranks.reserve(n, n * 8);
    std::vector<bool> seen(n, false);
    impl->decode_offset.assign(n, 0);
    impl->decode_len.assign(n, kUndecodable);
    impl->special.assign(n, false);
    for (const auto& [key, value] : vocab) {
      if (!value.is_number_unsigned()) return Error("{}: vocab entry '{}' has a non-integer id", source, key);
      const uint64_t id = value.get<uint64_t>();
      if (id >= n) return Error("{}: vocab entry '{}' has id {}, expected ids 0..{}", source, key, id, n - 1);
      if (seen[id]) return Error("{}: vocab id {} appears twice", source, id);
      seen[id] = true;
      auto bytes = byte_level_decode(key);
      if (!bytes.ok()) return bytes.status().with_context(fmt::format("{}: vocab", source));
      if (bytes->empty()) return Error("{}: vocab id {} is the empty string", source, id);
      if (!impl->ranks.insert(*bytes, static_cast<uint32_t>(id))) {
        return Error("{}: vocab id {} has the same bytes as an earlier token", source, id);
      }
      impl->set_token(static_cast<TokenId>(id), *bytes, false);
    }
    impl->num_bpe = n;
    GPTOSS_TRY(impl->check_bpe().with_context(source));

    if (root.contains("added_tokens")) {
      if (!root["added_tokens"].is_array()) return Error("{}: added_tokens is not an array", source);
      for (const json& t : root["added_tokens"]) {
        if (!t.is_object() || !t.contains("id") || !t["id"].is_number_unsigned() || !t.contains("content") ||
            !t["content"].is_string()) {
          return Error("{}: added_tokens entry without an integer \"id\" and a string \"content\"", source);
        }
        const uint64_t id = t["id"].get<uint64_t>();
        const std::string content = t["content"].get<std::string>();
        if (id >= kMaxTokenCount) return Error("{}: added token '{}' has id {}, too large", source, content, id);
        if (id < n) {
          // An added token may re-declare a vocab entry with the same text; anything else is a conflict.
          return Error("{}: added token '{}' has id {}, which is a BPE token", source, content, id);
        }
        GPTOSS_TRY(impl->add_special(content, static_cast<TokenId>(id), true).with_context(source));
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return Error("{}: unexpected JSON structure: {}", source, e.what());
  }
  return Tokenizer(std::move(impl));
}

Result<Tokenizer> Tokenizer::from_hf_json_file(const std::string& path) {
  GPTOSS_ASSIGN(std::string text, read_regular_file(path, kMaxTokenizerFileBytes));
  return from_hf_json_text(text, path);
}

Result<Tokenizer> Tokenizer::from_tiktoken_text(std::string_view text, std::string_view source) {
  auto impl = std::make_shared<Impl>();
  GPTOSS_TRY(impl->compile_regex(o200k::kPattern));
  impl->ranks.reserve(o200k::kNumBpeTokens, text.size());
  size_t line_no = 0;
  uint32_t max_rank = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string_view::npos) return Error("{}:{}: expected 'BASE64 RANK'", source, line_no);
    auto bytes = base64_decode(line.substr(0, sp));
    if (!bytes.ok()) return bytes.status().with_context(fmt::format("{}:{}", source, line_no));
    const std::string_view rank_text = line.substr(sp + 1);
    uint64_t rank = 0;
    if (rank_text.empty() || rank_text.size() > 9) return Error("{}:{}: bad rank '{}'", source, line_no, rank_text);
    for (char c : rank_text) {
      if (c < '0' || c > '9') return Error("{}:{}: bad rank '{}'", source, line_no, rank_text);
      rank = rank * 10 + static_cast<uint64_t>(c - '0');
    }
    if (rank >= o200k::kFirstSpecialId) {
      return Error("{}:{}: rank {} collides with the o200k_harmony special ids (>= {})", source, line_no, rank,
                   o200k::kFirstSpecialId);
    }
    if (bytes->empty()) return Error("{}:{}: empty token", source, line_no);
    if (rank < impl->decode_len.size() && impl->decode_len[rank] != kUndecodable) {
      return Error("{}:{}: rank {} appears twice", source, line_no, rank);
    }
    if (!impl->ranks.insert(*bytes, static_cast<uint32_t>(rank))) {
      return Error("{}:{}: token bytes appear twice", source, line_no);
    }
    impl->set_token(static_cast<TokenId>(rank), *bytes, false);
    max_rank = std::max(max_rank, static_cast<uint32_t>(rank));
  }
  if (impl->ranks.size() == 0) return Error("{}: no tokens (expected lines 'BASE64 RANK')", source);
  if (impl->ranks.size() != static_cast<size_t>(max_rank) + 1) {
    return Error("{}: ranks are not 0..{} without gaps ({} tokens)", source, max_rank, impl->ranks.size());
  }
  impl->num_bpe = max_rank + 1;
  GPTOSS_TRY(impl->check_bpe().with_context(source));
  for (const auto& s : o200k::harmony_special_tokens()) {
    GPTOSS_TRY(impl->add_special(s.name, s.id, s.canonical).with_context(source));
  }
  return Tokenizer(std::move(impl));
}

Result<Tokenizer> Tokenizer::from_tiktoken_file(const std::string& path) {
  GPTOSS_ASSIGN(std::string text, read_regular_file(path, kMaxTokenizerFileBytes));
  return from_tiktoken_text(text, path);
}

Result<Tokenizer> Tokenizer::from_file(const std::string& path) {
  if (path.size() >= 9 && path.substr(path.size() - 9) == ".tiktoken") return from_tiktoken_file(path);
  return from_hf_json_file(path);
}

Result<Tokenizer> Tokenizer::from_model_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Error("{}: not a directory", dir);
  const fs::path p = fs::path(dir) / "tokenizer.json";
  if (fs::is_regular_file(p, ec)) return from_hf_json_file(p.string());
  // scripts/setup.sh's demo model carries the o200k ranks instead (tokenizer.json is 28 MB, not in the repo).
  const fs::path t = fs::path(dir) / "o200k_base.tiktoken";
  if (fs::is_regular_file(t, ec)) return from_tiktoken_file(t.string());
  return Error("{}: no tokenizer.json or o200k_base.tiktoken (expected a Hugging Face model directory)", dir);
}

// ---------------------------------------------------------------------------------------------
// Encoding and decoding

std::vector<TokenId> Tokenizer::encode_ordinary(std::string_view text) const {
  std::vector<TokenId> out;
  out.reserve(text.size() / 3 + 4);
  bpe::MergeScratch scratch;
  impl_->encode_ordinary(text, scratch, out);
  return out;
}

std::vector<TokenId> Tokenizer::encode(std::string_view text, const AllowedSpecial& allowed) const {
  if (!allowed.all && allowed.names.empty()) return encode_ordinary(text);
  std::vector<TokenId> out;
  out.reserve(text.size() / 3 + 4);
  bpe::MergeScratch scratch;
  size_t pos = 0;
  while (pos <= text.size()) {
    const Impl::SpecialMatch m = impl_->find_special(text, pos, allowed);
    const size_t end = m.start == std::string_view::npos ? text.size() : m.start;
    impl_->encode_ordinary(text.substr(pos, end - pos), scratch, out);
    if (m.start == std::string_view::npos) break;
    out.push_back(m.id);
    pos = m.start + m.len;
  }
  return out;
}

Result<std::string> Tokenizer::decode(std::span<const TokenId> ids) const {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    const TokenId id = ids[i];
    if (!is_decodable(id)) {
      return Error("decode: token id {} (position {}) is not in the tokenizer (ids 0..{}{})", id, i,
                   token_count() - 1, id < token_count() ? ", unused id" : "");
    }
    out.append(impl_->decode_arena, impl_->decode_offset[id], impl_->decode_len[id]);
  }
  return out;
}

std::optional<TokenId> Tokenizer::special_token_id(std::string_view name) const {
  auto it = impl_->special_ids.find(std::string(name));
  if (it == impl_->special_ids.end()) return std::nullopt;
  return it->second;
}

uint32_t Tokenizer::token_count() const { return static_cast<uint32_t>(impl_->decode_len.size()); }
uint32_t Tokenizer::num_bpe_tokens() const { return impl_->num_bpe; }
bool Tokenizer::is_special(TokenId id) const { return id < impl_->special.size() && impl_->special[id]; }
bool Tokenizer::is_decodable(TokenId id) const {
  return id < impl_->decode_len.size() && impl_->decode_len[id] != kUndecodable;
}
std::string_view Tokenizer::token_bytes(TokenId id) const {
  if (!is_decodable(id)) return {};
  return std::string_view(impl_->decode_arena).substr(impl_->decode_offset[id], impl_->decode_len[id]);
}

// ---------------------------------------------------------------------------------------------
// StreamDecoder

namespace {
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
}

std::string StreamDecoder::push(TokenId id) {
  if (!tokenizer_.is_decodable(id)) {
    std::string out = finish();
    out += kReplacement;
    return out;
  }
  pending_ += tokenizer_.token_bytes(id);
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const size_t n = utf8::valid_sequence_length(pending_, i);
    if (n > 0) {
      out.append(pending_, i, n);
      i += n;
    } else if (utf8::is_incomplete_prefix(pending_, i)) {
      break;  // wait for the next token
    } else {
      out += kReplacement;
      ++i;
    }
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamDecoder::finish() {
  std::string out;
  if (!pending_.empty()) out += kReplacement;
  pending_.clear();
  return out;
}

}  // namespace gptoss
