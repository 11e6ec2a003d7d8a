// <immintrin.h> for the *_avx512.cpp files: include this first, before any header that includes
// <immintrin.h> itself (its include guard makes the first inclusion the one that counts).
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() (a self-initialised variable) as the unused source
// of unmasked operations, which -Wuninitialized reports at the intrinsics header's line once inlined.
#pragma once

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop
