// Error handling for the whole library: functions that can fail on input return Status or Result<T>
// (include/gptoss/status.h, the public half); nothing in the library aborts on bad input. Error() formats
// the message: it names the file, the tensor, and the expected versus actual value.
#pragma once

#include <fmt/format.h>

#include <utility>

#include "gptoss/status.h"

namespace gptoss {

template <typename... Args>
Status Error(fmt::format_string<Args...> f, Args&&... args) {
  return Status::error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace gptoss
