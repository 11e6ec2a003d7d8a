// Skeleton of the OpenAI API <-> Harmony mapping (see openai_api.h).
#include "serve/openai_api.h"

namespace gptoss::serve {

std::optional<ApiRequest> parse_chat_request(const nlohmann::json&, const MappingOptions&, RequestError& error) {
  error = {"chat completions are not supported yet", ""};
  return std::nullopt;
}

std::optional<ApiRequest> parse_responses_request(const nlohmann::json&, const MappingOptions&, RequestError& error) {
  error = {"responses are not supported yet", ""};
  return std::nullopt;
}

Result<std::vector<TokenId>> render_prompt(const harmony::HarmonyEncoding&, const ApiRequest&) {
  return Error("render_prompt: not supported yet");
}

struct CompletionMapper::Impl {
  CompletionResult result;
};

CompletionMapper::CompletionMapper(const harmony::HarmonyEncoding&, const std::string&)
    : impl_(std::make_shared<Impl>()) {}
void CompletionMapper::push(TokenId, std::vector<StreamEvent>&) {}
void CompletionMapper::finish(std::vector<StreamEvent>&) {}
const CompletionResult& CompletionMapper::result() const { return impl_->result; }
bool CompletionMapper::recovered_from_error() const { return false; }

nlohmann::ordered_json chat_message_json(const CompletionResult&) { return nlohmann::ordered_json::object(); }
std::string chat_finish_reason(const CompletionResult&, bool hit_length) { return hit_length ? "length" : "stop"; }
nlohmann::ordered_json chat_delta_json(const StreamEvent&, const CompletionResult&) {
  return nlohmann::ordered_json::object();
}
nlohmann::ordered_json responses_output_json(const CompletionResult&) { return nlohmann::ordered_json::array(); }

nlohmann::ordered_json error_json(const std::string& message, const std::string& type, const std::string& param) {
  nlohmann::ordered_json e;
  e["message"] = message;
  e["type"] = type;
  e["param"] = param.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(param);
  e["code"] = nullptr;
  return {{"error", e}};
}

}  // namespace gptoss::serve
