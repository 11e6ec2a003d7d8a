#include "core/fault_guard.h"

#include <setjmp.h>
#include <signal.h>

#include <cstring>
#include <mutex>

namespace gptoss {

namespace {

thread_local sigjmp_buf* t_guard = nullptr;  // set only while this thread runs a guarded call
struct sigaction g_previous;

void on_sigbus(int sig, siginfo_t* info, void* ctx) {
  if (sigjmp_buf* env = t_guard) {
    t_guard = nullptr;
    siglongjmp(*env, 1);
  }
  // Not ours: hand the fault to whoever handled it before (default: terminate).
  if (g_previous.sa_flags & SA_SIGINFO) {
    if (g_previous.sa_sigaction) g_previous.sa_sigaction(sig, info, ctx);
    return;
  }
  if (g_previous.sa_handler == SIG_IGN || g_previous.sa_handler == SIG_DFL) {
    // Re-raise with the default action; returning re-executes the faulting access.
    signal(SIGBUS, SIG_DFL);
    return;
  }
  g_previous.sa_handler(sig);
}

void install_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa{};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_previous);
  });
}

}  // namespace

bool run_sigbus_guarded(void (*fn)(void*), void* arg) {
  install_once();
  sigjmp_buf env;
  sigjmp_buf* const outer = t_guard;
  // savemask=1: the handler runs with SIGBUS unblocked (SA_NODEFER) and siglongjmp restores the mask.
  if (sigsetjmp(env, 1) != 0) {
    t_guard = outer;
    return false;
  }
  t_guard = &env;
  fn(arg);
  t_guard = outer;
  return true;
}

bool guarded_memcpy(void* dst, const void* src, size_t n) {
  struct Args {
    void* dst;
    const void* src;
    size_t n;
  } a{dst, src, n};
  return run_sigbus_guarded([](void* p) {
    auto* x = static_cast<Args*>(p);
    std::memcpy(x->dst, x->src, x->n);
  }, &a);
}

}  // namespace gptoss
