#include "format/json_util.h"

#include <unordered_set>
#include <vector>

namespace gptoss {

using json = nlohmann::json;

namespace {
// Thrown from the parser callback to stop at the first violation (caught below, never escapes).
struct StrictViolation {
  std::string msg;
};
constexpr size_t kMaxDescribedChars = 60;
}  // namespace

Result<json> parse_json_strict(std::string_view text, const std::string& what) {
  // One set of keys per object being parsed; only objects push (arrays have no keys).
  std::vector<std::unordered_set<std::string>> keys;
  auto cb = [&](int depth, json::parse_event_t ev, json& parsed) -> bool {
    switch (ev) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxJsonDepth)
          throw StrictViolation{fmt::format("{}: JSON nested deeper than {} levels", what, kMaxJsonDepth)};
        if (ev == json::parse_event_t::object_start) keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key:
        if (!keys.empty() && parsed.is_string() && !keys.back().insert(parsed.get<std::string>()).second)
          throw StrictViolation{
              fmt::format("{}: key {} appears twice in one JSON object", what, describe_json(parsed))};
        break;
      default:
        break;
    }
    return true;
  };
  try {
    json j = json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/false);
    if (j.is_discarded()) return Error("{}: not valid JSON", what);
    return j;
  } catch (const StrictViolation& v) {
    return Status::error(v.msg);
  } catch (const std::exception& e) {  // allocation failure on a huge document
    return Error("{}: cannot parse JSON: {}", what, e.what());
  }
}

std::string describe_json(const json& v) {
  switch (v.type()) {
    case json::value_t::array: return fmt::format("an array of {} elements", v.size());
    case json::value_t::object: return fmt::format("an object of {} keys", v.size());
    case json::value_t::string: {
      const std::string& s = v.get_ref<const std::string&>();
      if (s.size() <= kMaxDescribedChars)
        return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
      // Cut at a character boundary (never inside a UTF-8 sequence), then mark the cut.
      size_t n = kMaxDescribedChars;
      while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
      return json(s.substr(0, n)).dump(-1, ' ', false, json::error_handler_t::replace) + "...";
    }
    case json::value_t::discarded: return "(discarded)";
    default: return v.dump();  // null, boolean, numbers: short by nature
  }
}

}  // namespace gptoss
