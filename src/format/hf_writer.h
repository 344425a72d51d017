// Writing a (pruned) model as a HuggingFace checkpoint directory that any HF loader reads as an
// ordinary dense model: config.json, model.safetensors (sharded with an index above 5 GB), the
// tokenizer files, and spense.json describing how the MLPs were pruned.
//
// The directory appears under its name only when complete: everything is written into a hidden
// temporary sibling, synced, and renamed into place. An existing directory is never touched.
#pragma once

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "io/checkpoint.h"
#include "model/transformer.h"

namespace spense {

// Throws before writing anything if `out_dir` exists or its parent does not. `source` supplies
// the config and tokenizer; `model` the weights, stored as `dtype` (F32, BF16 or F16).
void write_hf_checkpoint(const std::filesystem::path& out_dir, const Checkpoint& source, const Transformer& model, DType dtype,
                         const nlohmann::json& spense_json);

// Fails with a clear message if `out_dir` cannot be created as a new directory (it exists, or
// its parent is missing or not a directory): checked before long work starts.
void check_new_output_dir(const std::filesystem::path& out_dir);

}  // namespace spense
