// libFuzzer entry point for the safetensors header parser: arbitrary bytes must give either a
// validated header or an error Status, never a crash, a hang or an out-of-range read. The tensor
// ranges it accepts must tile the data section exactly, with unique names.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <span>
#include <string>

#include "format/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto r = gptoss::parse_safetensors_header(std::span<const uint8_t>(data, size), size, "fuzz.safetensors");
  if (r.ok()) {
    uint64_t at = 0;
    std::set<std::string> names;
    for (const auto& t : r->tensors) {  // sorted by offset
      if (t.begin != at || t.end < t.begin || !names.insert(t.name).second) std::abort();
      at = t.end;
    }
    if (r->data_offset + at != size) std::abort();
  }
  return 0;
}
