#include "core/dtype.h"

namespace gptoss {

namespace {
struct DTypeInfo {
  DType type;
  std::string_view name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::F32, "F32", 4}, {DType::BF16, "BF16", 2}, {DType::F16, "F16", 2},  {DType::U8, "U8", 1},
    {DType::I8, "I8", 1},   {DType::I32, "I32", 4},   {DType::I64, "I64", 8},  {DType::U16, "U16", 2},
    {DType::U32, "U32", 4}, {DType::F64, "F64", 8},   {DType::BOOL, "BOOL", 1},
};
}  // namespace

std::optional<DType> dtype_from_string(std::string_view s) {
  for (const auto& d : kDTypes)
    if (d.name == s) return d.type;
  return std::nullopt;
}

std::string_view dtype_name(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d.name;
  return "?";
}

size_t dtype_size(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d.size;
  return 0;
}

}  // namespace gptoss
