// Sharing a converted model: every convert output carries a .gitattributes that sends its large files through
// Git LFS, so `git add` + `git push` to a Git host (or the Hugging Face Hub) stores weights as LFS objects
// instead of failing on size limits. The recipe is in the README ("Sharing a converted model").
#pragma once

#include <string>

#include "core/status.h"

namespace gptoss {

// Files at least this large get an LFS rule even when no pattern covers them (the Hugging Face Hub refuses
// plain Git files above 10 MB; tokenizer.json is 27 MB).
inline constexpr unsigned long long kLfsMinFileBytes = 10ull << 20;

// Writes DIR/.gitattributes for the files now under DIR: "*.safetensors" for safetensors shards,
// "jax_params/**" for an Orbax array store, and the path of any other file of kLfsMinFileBytes or more.
Status write_lfs_attributes(const std::string& dir);

}  // namespace gptoss
