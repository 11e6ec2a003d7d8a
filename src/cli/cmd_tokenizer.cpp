// gptoss tokenize / detokenize / render / parse: the tokenizer and the Harmony chat format from the
// command line. Token ids print as one JSON array per line.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/command.h"
#include "cli/errors.h"
#include "cli/input.h"
#include "core/file_io.h"
#include "serve/openai_api.h"
#include "tokenizer/harmony.h"
#include "tokenizer/tokenizer.h"

namespace gptoss::cli {
namespace {

struct TokenizerSource {
  std::string model_dir;
  std::string tokenizer_file;
  void add_options(CLI::App* cmd) {
    auto* m = cmd->add_option("--model,-m", model_dir,
                              "Model directory holding tokenizer.json (or o200k_base.tiktoken)");
    auto* t = cmd->add_option("--tokenizer", tokenizer_file,
                              "tokenizer.json, or a .tiktoken rank file (adds the o200k_harmony specials)");
    m->excludes(t);
    t->excludes(m);
  }
  Result<Tokenizer> load() const {
    if (!model_dir.empty()) return Tokenizer::from_model_dir(model_dir);
    if (!tokenizer_file.empty()) return Tokenizer::from_file(tokenizer_file);
    return Error("give --model DIR or --tokenizer FILE");
  }
};

void print_ids(const std::vector<TokenId>& ids, std::string& out) {
  out += '[';
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(ids[i]);
  }
  out += "]\n";
}

void write_stdout(std::string_view s) { std::fwrite(s.data(), 1, s.size(), stdout); }

// One id list on stdout; the exit status 0.
int write_ids(const std::vector<TokenId>& ids) {
  std::string out;
  print_ids(ids, out);
  write_stdout(out);
  return 0;
}

Result<std::string> hex_decode(std::string_view s, size_t line_no) {
  if (s.size() % 2) return Error("line {}: odd number of hex digits", line_no);
  const auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out(s.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = nib(s[2 * i]), lo = nib(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return Error("line {}: not a hex digit", line_no);
    out[i] = static_cast<char>(hi * 16 + lo);
  }
  return out;
}

// The input of detokenize and parse: a tokenizer, and token ids from --tokens LIST or --file F ('-' or
// neither: standard input).
struct TokenInput {
  TokenizerSource src;
  std::string tokens, file;
  bool has_tokens = false;  // set by parsed(), in the command's callback
  CLI::Option* tokens_opt = nullptr;
  void add_options(CLI::App* cmd) {
    src.add_options(cmd);
    tokens_opt = cmd->add_option("--tokens", tokens, "Token ids separated by commas or spaces: 1,2,3 or [1, 2, 3]");
    auto* f = cmd->add_option("--file", file, "File of token ids in the same syntax ('-' = stdin, the default)");
    tokens_opt->excludes(f);
  }
  void parsed() { has_tokens = tokens_opt->count() > 0; }
  // The tokenizer, then the ids.
  Result<std::pair<Tokenizer, std::vector<TokenId>>> load() const {
    GPTOSS_ASSIGN(Tokenizer tok, src.load());
    std::vector<int32_t> ids;
    if (has_tokens) {
      GPTOSS_ASSIGN(ids, parse_token_list(tokens, "--tokens"));
    } else {
      GPTOSS_ASSIGN(std::string text, read_input(file));
      GPTOSS_ASSIGN(ids, parse_token_list(text, file.empty() || file == "-" ? "standard input" : file));
    }
    return std::pair{std::move(tok), std::vector<TokenId>(ids.begin(), ids.end())};
  }
};

// render --chat-request: the prompt ids `gptoss serve` runs for a chat-completions body.
int render_chat_request(const Tokenizer& tok, const std::string& path, const std::string& date) {
  if (!date.empty() && !serve::is_valid_conversation_date(date)) {
    return fail(Error("--conversation-date: '{}' is not a YYYY-MM-DD date", date));
  }
  auto body = read_input(path);
  if (!body.ok()) return fail(body.status());
  serve::RequestError error;
  const auto req = serve::parse_chat_request_text(*body, serve::MappingOptions{date}, error);
  if (!req) return fail(Error("{}: {}", path, error.message));
  auto enc = harmony::HarmonyEncoding::create(tok);
  if (!enc.ok()) return fail(enc.status());
  auto ids = serve::render_prompt(*enc, *req);
  if (!ids.ok()) return fail(ids.status());
  return write_ids(*ids);
}

// parse --chat-response: completion ids -> {"message": choices[0].message, "finish_reason",
// "recovered_from_error"}, as the server maps them. `forced_prefix` is the header the server forced
// (tool_choice required / named); `hit_length`: generation stopped at max_tokens.
int parse_chat_response(const Tokenizer& tok, const std::vector<TokenId>& ids, const std::string& forced_prefix,
                        bool hit_length) {
  auto enc = harmony::HarmonyEncoding::create(tok);
  if (!enc.ok()) return fail(enc.status());
  serve::CompletionMapper mapper(*enc, forced_prefix);
  std::vector<serve::StreamEvent> events;
  for (TokenId id : ids) mapper.push(id, events);
  mapper.finish(events);
  nlohmann::ordered_json out;
  out["message"] = serve::chat_message_json(mapper.result());
  out["finish_reason"] = serve::chat_finish_reason(mapper.result(), hit_length);
  out["recovered_from_error"] = mapper.recovered_from_error();
  std::printf("%s\n", out.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
  return 0;
}

void register_tokenize(CLI::App& app, CommandContext& ctx) {
  struct Opts {
    TokenizerSource src;
    std::string text, file;
    bool has_text = false, allow_special = false, lines = false, hex_lines = false;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("tokenize", "Encode text to token ids (a JSON array)");
  opts->src.add_options(cmd);
  auto* text_opt = cmd->add_option("--text", opts->text, "Text to encode");
  auto* file_opt = cmd->add_option("--file", opts->file, "File whose bytes to encode ('-' = stdin)");
  text_opt->excludes(file_opt);
  cmd->add_flag("--allow-special", opts->allow_special, "Turn special-token strings (<|start|>...) into their ids");
  auto* lines = cmd->add_flag("--lines", opts->lines, "Encode each line of the input separately (one array per line)");
  auto* hex = cmd->add_flag("--hex-lines", opts->hex_lines,
                            "Each input line is hex-encoded bytes; encode each separately (one array per line)");
  lines->excludes(hex);
  cmd->callback([&ctx, opts, text_opt] {
    opts->has_text = text_opt->count() > 0;
    ctx.run = [opts] {
      auto tok = opts->src.load();
      if (!tok.ok()) return fail(tok.status());
      std::string input;
      if (opts->has_text) {
        input = opts->text;
      } else {
        auto r = read_input(opts->file);
        if (!r.ok()) return fail(r.status());
        input = std::move(*r);
      }
      const AllowedSpecial allowed = opts->allow_special ? AllowedSpecial::every() : AllowedSpecial::none();
      std::string out;
      if (opts->lines || opts->hex_lines) {
        size_t pos = 0, line_no = 0;
        while (pos < input.size()) {
          size_t eol = input.find('\n', pos);
          if (eol == std::string::npos) eol = input.size();
          std::string_view line(input.data() + pos, eol - pos);
          pos = eol + 1;
          ++line_no;
          if (opts->hex_lines) {
            auto bytes = hex_decode(line, line_no);
            if (!bytes.ok()) return fail(bytes.status());
            print_ids(tok->encode(*bytes, allowed), out);
          } else {
            print_ids(tok->encode(line, allowed), out);
          }
          if (out.size() > (1 << 20)) {
            write_stdout(out);
            out.clear();
          }
        }
      } else {
        print_ids(tok->encode(input, allowed), out);
      }
      write_stdout(out);
      return 0;
    };
  });
}

void register_detokenize(CLI::App& app, CommandContext& ctx) {
  auto input = std::make_shared<TokenInput>();
  auto* cmd = app.add_subcommand("detokenize", "Decode token ids to text (raw bytes on stdout)");
  input->add_options(cmd);
  cmd->callback([&ctx, input] {
    input->parsed();
    ctx.run = [input] {
      auto in = input->load();
      if (!in.ok()) return fail(in.status());
      const auto& [tok, ids] = *in;
      auto text = tok.decode(ids);
      if (!text.ok()) return fail(text.status());
      write_stdout(*text);
      return 0;
    };
  });
}

void register_render(CLI::App& app, CommandContext& ctx) {
  struct Opts {
    TokenizerSource src;
    std::string conversation;
    bool for_completion = false;
    std::string chat_request, conversation_date;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("render", "Render a Harmony conversation (openai-harmony JSON) to token ids");
  opts->src.add_options(cmd);
  auto* conv_opt = cmd->add_option("--conversation", opts->conversation, "Conversation JSON file ('-' = stdin)");
  cmd->add_flag("--for-completion", opts->for_completion, "Append <|start|>assistant to prompt the model");
  auto* req_opt = cmd->add_option("--chat-request", opts->chat_request,
                                  "A /v1/chat/completions body ('-' = stdin): print the prompt ids the server runs");
  cmd->add_option("--conversation-date", opts->conversation_date,
                  "YYYY-MM-DD in the system message (with --chat-request; default: today in UTC)")
      ->needs(req_opt);
  conv_opt->excludes(req_opt);
  req_opt->excludes(conv_opt);
  cmd->callback([&ctx, opts, conv_opt, req_opt] {
    if (conv_opt->count() + req_opt->count() == 0) throw CLI::RequiredError("--conversation or --chat-request");
    ctx.run = [opts] {
      auto tok = opts->src.load();
      if (!tok.ok()) return fail(tok.status());
      if (!opts->chat_request.empty()) return render_chat_request(*tok, opts->chat_request, opts->conversation_date);
      auto r = read_input(opts->conversation);
      if (!r.ok()) return fail(r.status());
      const std::string text = std::move(*r);
      auto conv = harmony::Conversation::from_json_text(text);
      if (!conv.ok()) return fail(conv.status().with_context(opts->conversation));
      auto enc = harmony::HarmonyEncoding::create(*tok);
      if (!enc.ok()) return fail(enc.status());
      auto ids = opts->for_completion ? enc->render_for_completion(*conv) : enc->render_conversation(*conv);
      if (!ids.ok()) return fail(ids.status());
      return write_ids(*ids);
    };
  });
}

void register_parse(CLI::App& app, CommandContext& ctx) {
  struct Opts {
    TokenInput input;
    std::string role = "assistant";
    bool chat_response = false, hit_length = false;
    std::string forced_prefix;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("parse", "Parse a completion's token ids into Harmony messages (JSON)");
  opts->input.add_options(cmd);
  cmd->add_option("--role", opts->role, "Role the completion starts with (empty: tokens start with <|start|>)");
  auto* chat_opt = cmd->add_flag("--chat-response", opts->chat_response,
                                  "Print the chat-completions message the server returns for these completion tokens");
  cmd->add_option("--forced-prefix", opts->forced_prefix,
                  "With --chat-response: the header text the server forced after <|start|>assistant")
      ->needs(chat_opt);
  cmd->add_flag("--hit-length", opts->hit_length, "With --chat-response: generation stopped at max_tokens")
      ->needs(chat_opt);
  cmd->callback([&ctx, opts] {
    opts->input.parsed();
    ctx.run = [opts] {
      auto in = opts->input.load();
      if (!in.ok()) return fail(in.status());
      const auto& [tok, ids] = *in;
      if (opts->chat_response) return parse_chat_response(tok, ids, opts->forced_prefix, opts->hit_length);
      auto enc = harmony::HarmonyEncoding::create(tok);
      if (!enc.ok()) return fail(enc.status());
      auto msgs = enc->parse_messages(ids, opts->role);
      if (!msgs.ok()) return fail(msgs.status());
      nlohmann::ordered_json arr = nlohmann::ordered_json::array();
      for (const auto& m : *msgs) arr.push_back(m.to_json());
      std::printf("%s\n", arr.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
      return 0;
    };
  });
}

GPTOSS_REGISTER_COMMAND(60, register_tokenize);
GPTOSS_REGISTER_COMMAND(61, register_detokenize);
GPTOSS_REGISTER_COMMAND(62, register_render);
GPTOSS_REGISTER_COMMAND(63, register_parse);

}  // namespace
}  // namespace gptoss::cli
