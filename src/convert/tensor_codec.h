// Element conversions the converter streams through: MXFP4 experts to transformers' dense layout,
// and float casts. Each works on a slice so a tensor never has to be materialised whole.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace gptoss {

// Dequantizes columns [col_begin, col_end) of one MXFP4 matrix W [rows, cols] ([out, in], blocks
// [rows, cols/32, 16], scales [rows, cols/32]) and writes them transposed: dst is row-major
// [col_end - col_begin, rows] (= [in, out], transformers' GptOssExperts layout, reference §2.4) of
// `out` (F32 or BF16; both exact for every MXFP4 value). col_begin and col_end are multiples of 32.
void mxfp4_to_dense_transposed(const uint8_t* blocks, const uint8_t* scales, int64_t rows, int64_t cols,
                               int64_t col_begin, int64_t col_end, DType out, void* dst);

// Converts n elements between float dtypes (F32, BF16, F16); F32 -> BF16 rounds to nearest even,
// every other direction used here is exact. from == to copies.
void convert_floats(const void* src, DType from, void* dst, DType to, size_t n);

bool is_float_dtype(DType t);

}  // namespace gptoss
