// render_prompt, error_json and the conversation-date check (the rest of openai_api.h lives in
// chat_request.cpp, responses_request.cpp, completion_mapper.cpp and api_json.cpp).
#include "serve/openai_api.h"

namespace gptoss::serve {

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
