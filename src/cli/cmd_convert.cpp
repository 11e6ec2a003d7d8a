// gptoss convert: any gpt-oss checkpoint -> native / safetensors / orbax (src/convert/convert.h).
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/errors.h"
#include "convert/convert.h"
#include "core/progress.h"

namespace gptoss::cli {
namespace {

std::atomic<bool> g_cancel{false};
static_assert(std::atomic<bool>::is_always_lock_free, "the signal handler stores to it");

extern "C" void on_signal(int) { g_cancel.store(true); }

// SIGINT/SIGTERM only set a flag: the converter stops at the next chunk, removes its temp dir
// and fails with "interrupted".
void install_signal_handlers() {
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

struct Args {
  std::string model_path, output, format = "native", dtype = "auto";
  bool test_only = false, force = false, quiet = false, json = false, verify_only = false;
  int layers = -1, threads = 2, shard_mb = 4096;
};

int run_verify(const Args& a) {
  auto r = verify_native(a.model_path, !a.quiet && !a.json && stderr_is_tty());
  if (!r.ok()) {
    return fail(r.status().with_context("convert --verify-only"));
  }
  if (a.json) {
    nlohmann::json j = {{"ok", true}, {"tensors", r->tensors}, {"bytes", r->bytes}, {"seconds", r->seconds}};
    std::printf("%s\n", j.dump().c_str());
  } else if (!a.quiet) {
    std::fprintf(stderr, "verified %zu tensors, %s in %.1f s: all checksums match\n", r->tensors,
                 human_bytes(r->bytes).c_str(), r->seconds);
  }
  return 0;
}

int run_convert(const Args& a) {
  if (a.verify_only) return run_verify(a);
  ConvertOptions o;
  o.model_path = a.model_path;
  o.output = a.output;
  o.format = a.format == "safetensors" ? OutputFormat::Safetensors
             : a.format == "orbax"     ? OutputFormat::Orbax
                                       : OutputFormat::Native;
  o.dtype = a.dtype == "mxfp4" ? OutputDType::Mxfp4
            : a.dtype == "bf16" ? OutputDType::BF16
            : a.dtype == "f32"  ? OutputDType::F32
                                : OutputDType::Auto;
  o.max_layers = a.test_only ? 2 : a.layers;
  o.force = a.force;
  o.threads = a.threads;
  o.max_shard_bytes = uint64_t(a.shard_mb) << 20;
  o.cancel = &g_cancel;
  o.show_progress = !a.quiet && !a.json && stderr_is_tty();
  install_signal_handlers();
  auto r = convert_checkpoint(o);
  if (!r.ok()) {
    fail(r.status());
    return g_cancel.load() ? 130 : kExitFailure;
  }
  const ConvertSummary& s = *r;
  if (a.json) {
    nlohmann::ordered_json j = {{"ok", true},           {"input", s.input_dir},      {"output", s.output_dir},
                                {"source_layout", s.source_layout}, {"format", s.format}, {"dtype", s.dtype},
                                {"layers", s.layers},    {"tensors", s.tensors},      {"files", s.files},
                                {"bytes_in", s.bytes_in}, {"bytes_out", s.bytes_out}, {"seconds", s.seconds},
                                {"mb_per_s", s.seconds > 0 ? double(s.bytes_out) / 1e6 / s.seconds : 0.0},
                                {"peak_rss_bytes", s.peak_rss}};
    std::printf("%s\n", j.dump().c_str());
  } else if (!a.quiet) {
    std::fprintf(stderr, "converted %s (%s) -> %s [%s, %s]: %zu tensors, %d layers, %s in, %s out, %.1f s (%.0f MB/s), peak RSS %s\n",
                 s.input_dir.c_str(), s.source_layout.c_str(), s.output_dir.c_str(), s.format.c_str(), s.dtype.c_str(),
                 s.tensors, s.layers, human_bytes(s.bytes_in).c_str(), human_bytes(s.bytes_out).c_str(), s.seconds,
                 s.seconds > 0 ? double(s.bytes_out) / 1e6 / s.seconds : 0.0, human_bytes(s.peak_rss).c_str());
  }
  return 0;
}

void setup(CLI::App& app, CommandContext& ctx) {
  auto args = std::make_shared<Args>();
  CLI::App* c = app.add_subcommand(
      "convert", "Convert a gpt-oss checkpoint (Hugging Face MXFP4 or dense, original/, native) to the native "
                 "load-ready layout, unquantized safetensors, or an Orbax checkpoint (docs/FORMAT.md)");
  c->add_option("--model,-m,--model-path", args->model_path, "Input checkpoint directory")->required();
  c->add_option("--output,-o", args->output,
                "Output directory (default: beside the input, DIR-gptoss / DIR-bf16 / DIR-f32 / DIR-jax)");
  c->add_option("--format", args->format, "native (default), safetensors or orbax")
      ->check(CLI::IsMember({"native", "safetensors", "orbax"}));
  c->add_option("--dtype", args->dtype,
                "Expert weights: mxfp4 (native default), bf16 (safetensors/orbax default) or f32 (all tensors "
                "f32); auto: the format's default")
      ->check(CLI::IsMember({"auto", "mxfp4", "bf16", "f32"}));
  auto* t = c->add_flag("--test-only", args->test_only, "Convert only the first 2 layers (config says 2)");
  c->add_option("--layers", args->layers, "Convert only the first N layers (default: all)")
      ->excludes(t)
      ->check(CLI::Range(1, 1 << 20))
      ->default_str("");
  c->add_flag("--force", args->force, "Replace an existing output directory");
  c->add_flag("--quiet,-q", args->quiet, "No progress bar or summary line");
  c->add_flag("--json", args->json, "Print one JSON summary object on stdout");
  c->add_option("--threads", args->threads, "1: single thread; 2 (default): produce and write in parallel")
      ->check(CLI::Range(1, 256));
  c->add_option("--shard-mb", args->shard_mb, "Largest output shard in MiB")->check(CLI::Range(1, 1 << 30));
  c->add_flag("--verify-only", args->verify_only, "Only recompute the checksums of the native checkpoint at --model");
  c->callback([args, &ctx] { ctx.run = [args] { return run_convert(*args); }; });
}

GPTOSS_REGISTER_COMMAND(10, setup);

}  // namespace
}  // namespace gptoss::cli
