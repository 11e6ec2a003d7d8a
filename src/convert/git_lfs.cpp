#include "convert/git_lfs.h"

#include <algorithm>
#include <filesystem>
#include <vector>

#include "convert/output_sink.h"

namespace gptoss {

namespace fs = std::filesystem;

Status write_lfs_attributes(const std::string& dir) {
  std::error_code ec;
  bool safetensors = false, orbax = false;
  std::vector<std::string> large;  // other large files, relative to dir, '/'-separated as Git writes paths
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const fs::path rel = it->path().lexically_relative(dir);
    if (rel.extension() == ".safetensors") {
      safetensors = true;
    } else if (*rel.begin() == "jax_params") {
      orbax = true;
    } else if (it->file_size(ec) >= kLfsMinFileBytes && !ec) {
      large.push_back(rel.generic_string());
    }
  }
  if (ec) return Error("{}: listing the output for .gitattributes: {}", dir, ec.message());
  std::sort(large.begin(), large.end());
  std::string text = "# Large files of this converted model go through Git LFS (written by gptoss convert).\n";
  const char* rule = " filter=lfs diff=lfs merge=lfs -text\n";
  if (safetensors) text += std::string("*.safetensors") + rule;
  if (orbax) text += std::string("jax_params/**") + rule;
  for (const std::string& f : large) {
    // Git attribute patterns treat these as special; such names get no rule rather than a wrong one.
    if (f.find_first_of(" \t*?[\\#!\"") != std::string::npos) continue;
    text += "/" + f + rule;
  }
  return write_file_synced((fs::path(dir) / ".gitattributes").string(), text);
}

}  // namespace gptoss
