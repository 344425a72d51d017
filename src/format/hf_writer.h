// Writing a (pruned) model as a HuggingFace checkpoint directory that any HF loader reads as an
// ordinary dense model: config.json, model.safetensors (sharded with an index above 5 GB), the
// tokenizer files, and spense.json describing how the MLPs were pruned.
//
// Tensors are encoded and written one at a time: writing needs memory for the largest tensor, not
// for a second copy of the model. The directory appears under its name only when complete:
// everything is written into a hidden temporary sibling, synced, and renamed into place. An
// existing directory is never touched.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/transformer.h"

namespace spense {

// HF's default largest shard (5 GB): above it model.safetensors is split, with an index.
constexpr uint64_t kHfShardBytes = uint64_t(5) << 30;

// Fills `bytes` with weight `proj` of layer `layer`'s MLP, already in the checkpoint's dtype and
// the model's (runtime) layout: for a model whose MLPs are held elsewhere than in memory.
using MlpBytes = std::function<void(int64_t layer, MlpProj proj, std::span<uint8_t> bytes)>;

// The tensors of `model` as an HF checkpoint names, orders and shapes them, each encoded as `dtype`
// when the writer reaches it; they refer to `model`, which must outlive them. A layer whose MLP
// is not loaded takes its three MLP tensors from `mlp_bytes`; without it, the layer is an error.
std::vector<TensorData> hf_tensors(const Transformer& model, DType dtype, const MlpBytes& mlp_bytes = {});

// Throws before writing anything if `out_dir` exists or its parent does not. `source` supplies
// the config and tokenizer (with `cfg`, its parsed form); `tensors` (hf_tensors) the weights, all
// stored as `dtype` (F32, BF16 or F16), one tensor in memory at a time, in shards of at most
// `shard_bytes` where they do not fit in one file.
void write_hf_checkpoint(const std::filesystem::path& out_dir, const Checkpoint& source, const ModelConfig& cfg,
                         const std::vector<TensorData>& tensors, DType dtype, const nlohmann::json& spense_json,
                         uint64_t shard_bytes = kHfShardBytes);
// The same for a model whose weights are all in memory.
void write_hf_checkpoint(const std::filesystem::path& out_dir, const Checkpoint& source, const Transformer& model, DType dtype,
                         const nlohmann::json& spense_json);

// Fails with a clear message if `out_dir` cannot be created as a new directory (it exists, or
// its parent is missing or not a directory): checked before long work starts.
void check_new_output_dir(const std::filesystem::path& out_dir);

}  // namespace spense
