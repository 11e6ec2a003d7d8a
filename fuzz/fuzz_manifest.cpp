// libFuzzer entry point for the native manifest gptoss.json: arbitrary text must give a well-formed
// tensor list (unique names, plain file names, byte counts matching shapes) or an error Status.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string_view>

#include "format/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto r = gptoss::parse_manifest(std::string_view(reinterpret_cast<const char*>(data), size), "gptoss.json");
  if (!r.ok()) {
    if (r.status().message().size() > 1000) std::abort();
    return 0;
  }
  if (r->tensors.empty()) std::abort();
  std::set<std::string> names;
  for (const auto& t : r->tensors) {
    if (!names.insert(t.name).second) std::abort();
    if (t.file.empty() || t.file.find('/') != std::string::npos) std::abort();
    uint64_t n = gptoss::dtype_size(t.dtype);
    for (int64_t d : t.shape) n *= uint64_t(d);
    if (n != t.nbytes) std::abort();
  }
  return 0;
}
