// `gptoss serve`'s HTTP layer (cpp-httplib): the OpenAI routes over the Engine, authentication, limits,
// metrics, and a clean stop on SIGINT / SIGTERM.
#pragma once

#include <cstddef>
#include <string>

#include "core/status.h"
#include "serve/engine.h"
#include "serve/request.h"

namespace gptoss::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port (the line on stderr says which)
  std::string api_key;  // non-empty: every route but /health needs "Authorization: Bearer KEY"
  size_t max_body_bytes = 8u << 20;
  int request_timeout_s = 600;  // socket read/write idle limit
  int http_threads = 64;        // connections served at once (a streaming response holds one)
};

// Serves until SIGINT or SIGTERM, then stops accepting, cancels what runs (clients get what was
// generated, with finish_reason "stop") and returns.
Status run_server(Engine& engine, const ServeContext& ctx, const ServerOptions& opts);

}  // namespace gptoss::serve
