// Reading a memory-mapped file that another process truncates raises SIGBUS on the page past the new
// end. The converter reads its inputs through mappings; these helpers turn such a fault, on the thread
// that takes it, into a false return that the caller reports as "FILE shrank while being read".
//
// The first call installs a process-wide SIGBUS handler (once). A fault outside a guarded call goes
// to the handler that was installed before (by default: the process dies as it always did).
#pragma once

#include <cstddef>
#include <type_traits>

namespace gptoss {

// Runs fn(arg); returns false if it took SIGBUS. fn must be a plain computation over raw memory
// (memcpy, hashing, dtype conversion): a fault leaves it through siglongjmp, so it must own no object
// whose destructor would then be skipped, and hold no lock.
bool run_sigbus_guarded(void (*fn)(void*), void* arg);

// run_sigbus_guarded for a callable (called by reference; the same rules apply to its body).
template <typename F>
bool sigbus_guarded(F&& f) {
  return run_sigbus_guarded([](void* p) { (*static_cast<std::remove_reference_t<F>*>(p))(); },
                            const_cast<void*>(static_cast<const void*>(&f)));
}

// memcpy that returns false instead of dying when src lies in a mapping that shrank.
bool guarded_memcpy(void* dst, const void* src, size_t n);

}  // namespace gptoss
