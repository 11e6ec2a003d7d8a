// Error handling for the whole library: functions that can fail on input return Status or
// Result<T>; nothing in the library aborts on bad input. Messages name the file, the tensor,
// and the expected versus actual value, e.g. "model-00001.safetensors: tensor 'x': shape [2,3], expected [3,2]".
#pragma once

#include <fmt/format.h>

#include <cassert>
#include <optional>
#include <string>
#include <utility>

namespace gptoss {

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status ok_status() { return Status(); }
  static Status error(std::string msg) {
    Status s;
    s.msg_ = std::move(msg);
    s.failed_ = true;
    return s;
  }
  bool ok() const { return !failed_; }
  const std::string& message() const { return msg_; }
  // Prefix context ("loading model: ...") while propagating.
  Status with_context(std::string_view ctx) const {
    if (ok()) return *this;
    return error(fmt::format("{}: {}", ctx, msg_));
  }

 private:
  std::string msg_;
  bool failed_ = false;
};

template <typename... Args>
Status Error(fmt::format_string<Args...> f, Args&&... args) {
  return Status::error(fmt::format(f, std::forward<Args>(args)...));
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) { assert(!status_.ok()); }  // NOLINT
  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { assert(ok()); return *value_; }
  const T& value() const& { assert(ok()); return *value_; }
  T&& value() && { assert(ok()); return std::move(*value_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace gptoss

// Propagate a failed Status (or the Status of a failed Result) to the caller.
#define GPTOSS_TRY(expr)                              \
  do {                                                \
    auto&& gptoss_try_ = (expr);                      \
    if (!gptoss_try_.ok()) return ::gptoss::detail_status(gptoss_try_); \
  } while (0)

// Declare `lhs` from a Result, or return its error.
#define GPTOSS_CONCAT_INNER(a, b) a##b
#define GPTOSS_CONCAT(a, b) GPTOSS_CONCAT_INNER(a, b)
#define GPTOSS_ASSIGN(lhs, expr) GPTOSS_ASSIGN_IMPL(GPTOSS_CONCAT(gptoss_res_, __LINE__), lhs, expr)
#define GPTOSS_ASSIGN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                       \
  if (!tmp.ok()) return tmp.status();      \
  lhs = std::move(tmp).value()

namespace gptoss {
inline Status detail_status(const Status& s) { return s; }
template <typename T>
Status detail_status(const Result<T>& r) { return r.status(); }
}  // namespace gptoss
