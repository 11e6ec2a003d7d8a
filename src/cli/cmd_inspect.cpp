// gptoss inspect DIR: what a checkpoint holds (config, layout, every tensor), --verify for native checksums.
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/errors.h"
#include "convert/convert.h"
#include "core/progress.h"
#include "format/checkpoint.h"

namespace gptoss::cli {
namespace {

struct Args {
  std::string dir;
  bool json = false, verify = false, quiet = false;
};

int run_inspect(const Args& a) {
  auto r = Checkpoint::open(a.dir);
  if (!r.ok()) {
    return fail(r.status());
  }
  const Checkpoint& ck = *r;
  const ModelConfig& c = ck.config();
  const bool native = ck.layout() == CheckpointLayout::Native;
  if (a.verify && !native) {
    return fail(Error("{}: --verify needs a native checkpoint (gptoss.json); this one is {}", a.dir,
                       layout_name(ck.layout())));
  }
  Result<VerifySummary> v = VerifySummary{};
  if (a.verify) {
    v = verify_native(a.dir, !a.quiet && !a.json && stderr_is_tty());
    if (!v.ok()) {
      return fail(v.status());
    }
  }
  auto file_of = [&](const TensorData& t) {
    return std::filesystem::path(ck.files()[t.file_index]->path()).filename().string();
  };
  if (a.json) {
    nlohmann::ordered_json tensors = nlohmann::ordered_json::array();
    for (const TensorData& t : ck.tensors())
      tensors.push_back({{"name", t.spec.name},
                         {"dtype", dtype_name(t.dtype)},
                         {"shape", t.spec.shape},
                         {"bytes", t.bytes.size()},
                         {"file", file_of(t)},
                         {"source_name", t.source_name}});
    nlohmann::ordered_json j = {{"dir", ck.dir()},
                                {"layout", layout_name(ck.layout())},
                                {"experts", ck.experts() == ExpertStorage::Mxfp4 ? "mxfp4" : "dense"},
                                {"expert_dtype", dtype_name(ck.expert_dtype())},
                                {"config", c.to_hf_json(ck.experts() == ExpertStorage::Mxfp4)},
                                {"files", ck.files().size()},
                                {"tensor_bytes", ck.tensor_bytes()},
                                {"tensors", tensors}};
    if (a.verify) j["verified"] = {{"ok", true}, {"tensors", v->tensors}, {"bytes", v->bytes}};
    std::printf("%s\n", j.dump(1).c_str());
    return 0;
  }
  std::printf("%s: %s layout, %zu files, %zu tensors, %s\n", ck.dir().c_str(), layout_name(ck.layout()),
              ck.files().size(), ck.tensors().size(), human_bytes(ck.tensor_bytes()).c_str());
  std::printf("  layers %d, hidden %d, heads %d (kv %d, head_dim %d), experts %d (top-%d, intermediate %d, %s %s)\n",
              c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
              c.num_local_experts, c.num_experts_per_tok, c.intermediate_size,
              ck.experts() == ExpertStorage::Mxfp4 ? "mxfp4" : "dense", dtype_name(ck.expert_dtype()).data());
  std::printf("  vocab %d, sliding window %d, rope theta %g (yarn x%g, original context %d), max positions %d\n",
              c.vocab_size, c.sliding_window, c.rope_theta, c.rope_factor, c.rope_original_max_position,
              c.max_position_embeddings);
  for (const TensorData& t : ck.tensors())
    std::printf("  %-52s %-5s %-22s %12zu  %s\n", t.spec.name.c_str(), dtype_name(t.dtype).data(),
                shape_str(t.spec.shape).c_str(), t.bytes.size(), file_of(t).c_str());
  if (a.verify)
    std::printf("verified: %zu tensors, %s, all checksums match (%.1f s)\n", v->tensors, human_bytes(v->bytes).c_str(),
                v->seconds);
  return 0;
}

void setup(CLI::App& app, CommandContext& ctx) {
  auto args = std::make_shared<Args>();
  CLI::App* c = app.add_subcommand("inspect", "Show a checkpoint's config, layout and every tensor (any layout)");
  c->add_option("dir,--model,-m,--model-path", args->dir, "Checkpoint directory (also as --model DIR)")->required();
  c->add_flag("--json", args->json, "Machine-readable output");
  c->add_flag("--verify", args->verify, "Recompute the checksums of a native checkpoint");
  c->add_flag("--quiet,-q", args->quiet, "No progress bar");
  c->callback([args, &ctx] { ctx.run = [args] { return run_inspect(*args); }; });
}

GPTOSS_REGISTER_COMMAND(20, setup);

}  // namespace
}  // namespace gptoss::cli
