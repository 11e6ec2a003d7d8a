// Errors of the public API: every call that can fail returns a Status or a Result<T> with a message that
// names the file, the tensor, and the expected versus actual value, e.g.
// "model-00001.safetensors: tensor 'x': shape [2,3], expected [3,2]". Nothing aborts or throws on bad input.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
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
    return error(std::string(ctx) + ": " + msg_);
  }

 private:
  std::string msg_;
  bool failed_ = false;
};

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

inline Status detail_status(const Status& s) { return s; }
template <typename T>
Status detail_status(const Result<T>& r) { return r.status(); }

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
