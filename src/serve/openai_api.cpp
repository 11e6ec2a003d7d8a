// render_prompt, error_json, the conversation-date check and the other forms of the two request parsers
// (the rest of openai_api.h lives in chat_request.cpp, responses_request.cpp, completion_mapper.cpp and
// api_json.cpp).
#include "serve/openai_api.h"

#include "serve/request_common.h"

namespace gptoss::serve {

namespace {

using BodyParser = std::optional<ApiRequest> (*)(const nlohmann::ordered_json&, const MappingOptions&,
                                                 RequestError&);
// Text that is not JSON is an error like any field's; JSON goes to `parse`.
std::optional<ApiRequest> parse_text(std::string_view body, const MappingOptions& opts, RequestError& error,
                                     BodyParser parse) {
  const nlohmann::ordered_json j = detail::parse_body(body, error);
  if (j.is_discarded()) return std::nullopt;
  return parse(j, opts, error);
}

}  // namespace

std::optional<ApiRequest> parse_chat_request(const nlohmann::json& body, const MappingOptions& opts,
                                             RequestError& error) {
  return parse_chat_request(nlohmann::ordered_json(body), opts, error);
}
std::optional<ApiRequest> parse_responses_request(const nlohmann::json& body, const MappingOptions& opts,
                                                  RequestError& error) {
  return parse_responses_request(nlohmann::ordered_json(body), opts, error);
}
std::optional<ApiRequest> parse_chat_request_text(std::string_view body, const MappingOptions& opts,
                                                  RequestError& error) {
  return parse_text(body, opts, error, parse_chat_request);
}
std::optional<ApiRequest> parse_responses_request_text(std::string_view body, const MappingOptions& opts,
                                                       RequestError& error) {
  return parse_text(body, opts, error, parse_responses_request);
}

Result<std::vector<TokenId>> render_prompt(const harmony::HarmonyEncoding& enc, const ApiRequest& req) {
  GPTOSS_ASSIGN(std::vector<TokenId> ids, enc.render_for_completion(req.conversation));
  if (!req.forced_prefix.empty()) {
    const auto prefix = enc.tokenizer().encode(req.forced_prefix, AllowedSpecial::every());
    ids.insert(ids.end(), prefix.begin(), prefix.end());
  }
  return ids;
}

nlohmann::ordered_json error_json(const std::string& message, const std::string& type, const std::string& param) {
  nlohmann::ordered_json e;
  e["message"] = message;
  e["type"] = type;
  e["param"] = param.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(param);
  e["code"] = nullptr;
  return {{"error", e}};
}

bool is_valid_conversation_date(std::string_view date) {
  if (date.size() != 10 || date[4] != '-' || date[7] != '-') return false;
  for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9}) {
    if (date[i] < '0' || date[i] > '9') return false;
  }
  const int year = std::stoi(std::string(date.substr(0, 4)));
  const int month = std::stoi(std::string(date.substr(5, 2)));
  const int day = std::stoi(std::string(date.substr(8, 2)));
  static constexpr int kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (month < 1 || month > 12 || day < 1 || day > kDays[month - 1]) return false;
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return !(month == 2 && day == 29 && !leap);
}

}  // namespace gptoss::serve
