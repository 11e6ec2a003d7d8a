// libFuzzer entry point for the safetensors header parser: arbitrary bytes must give either a
// validated header or an error Status, never a crash, a hang or an out-of-range read. Every tensor
// range it accepts must lie inside the file.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "format/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto r = gptoss::parse_safetensors_header(std::span<const uint8_t>(data, size), size, "fuzz.safetensors");
  if (r.ok()) {
    for (const auto& t : r->tensors)
      if (t.end < t.begin || r->data_offset + t.end > size) std::abort();
  }
  return 0;
}
