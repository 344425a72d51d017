// Internal to io/: the readers behind open_checkpoint(), one per format.
#pragma once

#include <filesystem>

#include "io/checkpoint.h"

namespace spense::detail {

Checkpoint open_hf_directory(const std::filesystem::path& dir);
Checkpoint open_llama2c(const std::filesystem::path& file);
Checkpoint open_gguf(const std::filesystem::path& file);

}  // namespace spense::detail
