// gptoss-make-checkpoint: writes a random gpt-oss checkpoint for tests and benchmarks, streaming
// (the 20b preset is 13.8 GB and never sits in memory).
//
//   --layout hf        the exact Hugging Face layout: BF16 tensors, MXFP4 U8 experts, tensors in the
//                      real checkpoint's alphabetical order, shards with the real 0-based names
//                      model-00000-of-0000N.safetensors ... + model.safetensors.index.json (one shard:
//                      model.safetensors), config.json with quantization_config
//   --layout original  openai's original/ layout in OUT/original/: block.N names, fused attn.qkv,
//                      original config keys; shards model--00001-of-0000N.safetensors + index
//   --layout dense     transformers' unquantized layout: experts gate_up_proj [E, H, 2I] and down_proj
//                      [E, I, H] in BF16, the MXFP4 weights dequantized and transposed
//
// Every tensor's values come from its own generator, seeded from --seed and its Hugging Face name,
// so the same seed and shape give the same weights in every layout (original's qkv is q, k, v
// generated one after the other). Values follow ../shared/oracle/make_tiny_hf.py: normal * scale
// in bf16 (the normal approximated by a sum of four uniforms), 1 + 0.2 normal for norms, uniform
// random MXFP4 bytes, and scales 127 + round(log2(1 / (2.6 sqrt(fan_in)))) + {-1, 0, 1}, so a
// forward pass stays finite.
#include <xxhash.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "convert/tensor_codec.h"
#include "core/dtype.h"
#include "format/safetensors.h"
#include "format/tensor_names.h"

using namespace gptoss;
namespace fs = std::filesystem;

namespace {

struct Shape {
  int layers, hidden, experts, topk, heads, kv_heads, head_dim, inter, vocab, window, orig_ctx;
};

const std::map<std::string, Shape> kPresets = {
    {"tiny", {4, 128, 8, 2, 8, 2, 32, 96, 1024, 8, 64}},
    // scripts/setup.sh's demo model: tiny layers, but o200k_harmony's vocabulary and the real context
    // (131072 positions), so that the real tokenizer and chat work with it (~110 MB, mostly embeddings).
    {"demo", {4, 128, 8, 2, 8, 2, 32, 128, 201088, 128, 4096}},
    {"20b", {24, 2880, 32, 4, 64, 8, 64, 2880, 201088, 128, 4096}},
    {"120b", {36, 2880, 128, 4, 64, 8, 64, 2880, 201088, 128, 4096}},
};

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The byte stream of one Hugging Face tensor, produced front to back.
class TensorGen {
 public:
  TensorGen(const TensorSpec& s, const ModelConfig& c, uint64_t seed) : role_(s.role) {
    state_ = seed * 0x2545f4914f6cdd1dull ^ XXH3_64bits(s.name.data(), s.name.size());
    using R = TensorRole;
    const double H = c.hidden_size;
    switch (s.role) {
      case R::AttnNorm: case R::MlpNorm: case R::FinalNorm: mean_ = 1.0f; scale_ = 0.2f; break;
      case R::QWeight: case R::KWeight: case R::VWeight: case R::RouterWeight: case R::LmHead:
        scale_ = float(1.0 / std::sqrt(H)); break;
      case R::OWeight: scale_ = float(1.0 / std::sqrt(double(c.q_dim()))); break;
      case R::Embed: case R::Sinks: scale_ = 1.0f; break;
      case R::GateUpScales: case R::DownScales: {
        const double fan_in = s.role == R::GateUpScales ? H : double(c.intermediate_size);
        scale_base_ = 127 + int(std::lround(std::log2(1.0 / (2.6 * std::sqrt(fan_in)))));
        break;
      }
      default: scale_ = 0.1f; break;  // biases
    }
  }
  // Next n bytes (BF16 tensors: n even).
  void next(uint8_t* dst, size_t n) {
    if (role_ == TensorRole::GateUpBlocks || role_ == TensorRole::DownBlocks) {
      for (size_t i = 0; i < n; i += 8) {
        uint64_t r = splitmix64(state_);
        std::memcpy(dst + i, &r, std::min<size_t>(8, n - i));
      }
    } else if (role_ == TensorRole::GateUpScales || role_ == TensorRole::DownScales) {
      for (size_t i = 0; i < n; ++i) dst[i] = uint8_t(scale_base_ - 1 + int(splitmix64(state_) % 3));
    } else {
      for (size_t i = 0; i < n / 2; ++i) {
        const uint64_t r = splitmix64(state_);
        // Irwin-Hall(4): sum of four U(0,1) has mean 2 and variance 1/3.
        const float u = float((r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48)) / 65536.0f;
        const uint16_t h = f32_to_bf16(mean_ + scale_ * (u - 2.0f) * 1.7320508f);
        std::memcpy(dst + 2 * i, &h, 2);
      }
    }
  }

 private:
  TensorRole role_;
  uint64_t state_;
  float mean_ = 0.0f, scale_ = 0.0f;
  int scale_base_ = 127;
};

// One tensor of the output file: its name/dtype/shape and the function that streams its bytes.
struct OutTensor {
  TensorDecl decl;
  uint64_t bytes = 0;
  std::function<void(SafetensorsWriter&)> write;
};

Status write_stream(SafetensorsWriter& w, TensorGen& g, uint64_t n, std::vector<uint8_t>& buf) {
  while (n > 0) {
    const size_t k = size_t(std::min<uint64_t>(n, buf.size()));
    g.next(buf.data(), k);
    GPTOSS_TRY(w.append(buf.data(), k));
    n -= k;
  }
  return {};
}

uint64_t nbytes(const TensorDecl& d) {
  uint64_t n = dtype_size(d.dtype);
  for (int64_t x : d.shape) n *= uint64_t(x);
  return n;
}

Status write_files(const fs::path& dir, std::vector<OutTensor> tensors, uint64_t shard_bytes,
                   const std::function<std::string(size_t, size_t)>& shard_name) {
  std::vector<std::vector<size_t>> shards(1);
  uint64_t cur = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (cur > 0 && cur + tensors[i].bytes > shard_bytes) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(i);
    cur += tensors[i].bytes;
  }
  nlohmann::ordered_json wm = nlohmann::ordered_json::object();
  uint64_t total = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string fn = shards.size() == 1 ? "model.safetensors" : shard_name(s, shards.size());
    std::vector<TensorDecl> decls;
    for (size_t i : shards[s]) decls.push_back(tensors[i].decl);
    GPTOSS_ASSIGN(auto w, SafetensorsWriter::create((dir / fn).string(), decls, {{"format", "pt"}}, 8));
    for (size_t i : shards[s]) {
      tensors[i].write(*w);
      wm[tensors[i].decl.name] = fn;
      total += tensors[i].bytes;
    }
    GPTOSS_TRY(w->finish());
    std::fprintf(stderr, "wrote %s\n", (dir / fn).c_str());
  }
  if (shards.size() > 1) {
    nlohmann::ordered_json idx = {{"metadata", {{"total_size", total}}}, {"weight_map", wm}};
    std::ofstream(dir / "model.safetensors.index.json") << idx.dump(2) << "\n";
  }
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Write a random gpt-oss checkpoint (Hugging Face, original/ or dense layout) for tests and benchmarks"};
  std::string out, preset = "tiny", layout = "hf";
  uint64_t seed = 0;
  int shard_mb = 4577;  // ~4.8e9 bytes, the real checkpoints' shard limit
  std::map<std::string, int> over;
  app.add_option("out", out, "Output directory")->required();
  app.add_option("--preset", preset, "tiny (default), demo, 20b or 120b")
      ->check(CLI::IsMember({"tiny", "demo", "20b", "120b"}));
  app.add_option("--seed", seed, "Random seed (default 0)");
  app.add_option("--layout", layout, "hf (default), original or dense")->check(CLI::IsMember({"hf", "original", "dense"}));
  app.add_option("--shard-mb", shard_mb, "Largest shard in MiB")->check(CLI::PositiveNumber);
  for (const char* k : {"layers", "hidden", "experts", "topk", "heads", "kv-heads", "head-dim", "inter", "vocab",
                        "window", "orig-ctx"})
    app.add_option(std::string("--") + k, over[k], std::string("Override the preset's ") + k)->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  Shape p = kPresets.at(preset);
  for (auto& [k, v] : over) {
    if (!app.count(std::string("--") + k)) continue;
    int* f = k == "layers" ? &p.layers : k == "hidden" ? &p.hidden : k == "experts" ? &p.experts : k == "topk" ? &p.topk
           : k == "heads" ? &p.heads : k == "kv-heads" ? &p.kv_heads : k == "head-dim" ? &p.head_dim
           : k == "inter" ? &p.inter : k == "vocab" ? &p.vocab : k == "window" ? &p.window : &p.orig_ctx;
    *f = v;
  }
  nlohmann::json hf_cfg = {
      {"num_hidden_layers", p.layers}, {"num_local_experts", p.experts}, {"num_experts_per_tok", p.topk},
      {"vocab_size", p.vocab}, {"hidden_size", p.hidden}, {"intermediate_size", p.inter}, {"head_dim", p.head_dim},
      {"num_attention_heads", p.heads}, {"num_key_value_heads", p.kv_heads}, {"sliding_window", p.window},
      {"max_position_embeddings", 32 * p.orig_ctx},
      {"rope_scaling", {{"rope_type", "yarn"}, {"factor", 32.0}, {"original_max_position_embeddings", p.orig_ctx}}},
      {"eos_token_id", p.vocab > 200002 ? 200002 : p.vocab - 2}, {"pad_token_id", p.vocab > 200002 ? 199999 : p.vocab - 1}};
  auto cr = ModelConfig::from_json(hf_cfg, "shape");
  if (!cr.ok()) {
    std::fprintf(stderr, "gptoss-make-checkpoint: %s\n", cr.status().message().c_str());
    return 1;
  }
  const ModelConfig cfg = *cr;
  const fs::path dir(out);
  const fs::path wdir = layout == "original" ? dir / "original" : dir;
  fs::create_directories(wdir);

  auto buf = std::make_shared<std::vector<uint8_t>>(4u << 20);
  std::vector<OutTensor> tensors;
  auto gen_tensor = [&](const TensorSpec& s, std::string name, std::vector<int64_t> shape, std::vector<TensorSpec> parts) {
    OutTensor t;
    t.decl = {std::move(name), s.quantized() ? DType::U8 : DType::BF16, std::move(shape)};
    t.bytes = nbytes(t.decl);
    t.write = [parts, cfg, seed, buf](SafetensorsWriter& w) {
      for (const TensorSpec& ps : parts) {
        TensorGen g(ps, cfg, seed);
        uint64_t n = dtype_size(ps.quantized() ? DType::U8 : DType::BF16);
        for (int64_t x : ps.shape) n *= uint64_t(x);
        Status st = write_stream(w, g, n, *buf);
        if (!st.ok()) throw std::runtime_error(st.message());
      }
    };
    tensors.push_back(std::move(t));
  };

  const auto specs = model_tensor_specs(cfg, ExpertStorage::Mxfp4);
  std::map<std::string, const TensorSpec*> by_name;
  for (const auto& s : specs) by_name[s.name] = &s;
  if (layout == "hf") {
    for (const auto& s : specs) gen_tensor(s, s.name, s.shape, {s});
  } else if (layout == "original") {
    for (const auto& s : specs) {
      OriginalSource src = original_source(s, cfg);
      if (s.role == TensorRole::KWeight || s.role == TensorRole::VWeight || s.role == TensorRole::KBias ||
          s.role == TensorRole::VBias)
        continue;  // part of the fused qkv written with q
      if (s.role == TensorRole::QWeight || s.role == TensorRole::QBias) {
        const bool w = s.role == TensorRole::QWeight;
        const std::string l = fmt::format("model.layers.{}.self_attn.", s.layer);
        std::vector<int64_t> shape = s.shape;
        shape[0] = cfg.q_dim() + 2 * cfg.kv_dim();
        gen_tensor(s, src.name, shape,
                   {s, *by_name[l + (w ? "k_proj.weight" : "k_proj.bias")], *by_name[l + (w ? "v_proj.weight" : "v_proj.bias")]});
      } else {
        gen_tensor(s, src.name, s.shape, {s});
      }
    }
  } else {  // dense: experts dequantized from the same MXFP4 streams, [E, in, out] bf16
    for (const auto& d : model_tensor_specs(cfg, ExpertStorage::Dense)) {
      if (d.role != TensorRole::GateUpDense && d.role != TensorRole::DownDense) {
        gen_tensor(d, d.name, d.shape, {d});
        continue;
      }
      OutTensor t;
      t.decl = {d.name, DType::BF16, d.shape};
      t.bytes = nbytes(t.decl);
      const TensorSpec blocks = *by_name[d.name + "_blocks"], scales = *by_name[d.name + "_scales"];
      t.write = [blocks, scales, cfg, seed](SafetensorsWriter& w) {
        TensorGen gb(blocks, cfg, seed), gs(scales, cfg, seed);
        const int64_t E = blocks.shape[0], rows = blocks.shape[1], cols = blocks.shape[2] * 32;
        std::vector<uint8_t> b(size_t(rows * cols / 2)), s(size_t(rows * cols / 32)), o(size_t(rows * cols) * 2);
        for (int64_t e = 0; e < E; ++e) {
          gb.next(b.data(), b.size());
          gs.next(s.data(), s.size());
          mxfp4_to_dense_transposed(b.data(), s.data(), rows, cols, 0, cols, DType::BF16, o.data());
          Status st = w.append(o.data(), o.size());
          if (!st.ok()) throw std::runtime_error(st.message());
        }
      };
      tensors.push_back(std::move(t));
    }
  }
  if (layout != "dense")  // the published checkpoints store tensors in alphabetical name order
    std::sort(tensors.begin(), tensors.end(), [](const OutTensor& a, const OutTensor& b) { return a.decl.name < b.decl.name; });

  try {
    const bool orig = layout == "original";
    Status st = write_files(wdir, std::move(tensors), uint64_t(shard_mb) << 20, [orig](size_t i, size_t n) {
      // Real names: HF's are 0-based "of N-1", original's 1-based with a double dash.
      return orig ? fmt::format("model--{:05d}-of-{:05d}.safetensors", i + 1, n)
                  : fmt::format("model-{:05d}-of-{:05d}.safetensors", i, n - 1);
    });
    if (!st.ok()) throw std::runtime_error(st.message());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gptoss-make-checkpoint: %s\n", e.what());
    return 1;
  }
  nlohmann::json cj;
  if (layout == "original") {
    cj = {{"num_hidden_layers", p.layers}, {"num_experts", p.experts}, {"experts_per_token", p.topk},
          {"vocab_size", p.vocab}, {"hidden_size", p.hidden}, {"intermediate_size", p.inter},
          {"swiglu_limit", 7.0}, {"head_dim", p.head_dim}, {"num_attention_heads", p.heads},
          {"num_key_value_heads", p.kv_heads}, {"sliding_window", p.window},
          {"initial_context_length", p.orig_ctx}, {"rope_theta", 150000}, {"rope_scaling_factor", 32.0},
          {"rope_ntk_alpha", 1.0}, {"rope_ntk_beta", 32.0}};
  } else {
    cj = cfg.to_hf_json(layout == "hf");
  }
  std::ofstream(wdir / "config.json") << cj.dump(2) << "\n";
  std::fprintf(stderr, "wrote %s (%s layout, %d layers)\n", out.c_str(), layout.c_str(), p.layers);
  return 0;
}
