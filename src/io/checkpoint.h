// One in-memory description of a model checkpoint, whatever format it came from: an HF-style
// config (config.json, or one synthesised from llama2.c/GGUF headers), named tensors in HF naming
// and HF orientation ([out, in] for linear weights), and the tokenizer.
//
// Tensors point into memory-mapped files; nothing is read until a tensor is decoded.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/mapped_file.h"
#include "io/tokenizer.h"

namespace spense {

struct TensorRef {
    DType dtype = DType::F32;
    std::vector<int64_t> shape;  // HF order, outermost first
    const uint8_t* data = nullptr;
    size_t nbytes = 0;
    std::string file;  // where it lives, for error messages
    // > 0: the rows are stored in the interleaved RoPE order of llama2.c/GGUF (pairs (2i, 2i+1)
    // within each of `rope_heads` heads) and are reordered to HF's half-split order when decoded.
    int64_t rope_heads = 0;

    int64_t numel() const;
};

enum class CheckpointFormat { HfSafetensors, Llama2c, Gguf };
const char* format_name(CheckpointFormat f);

struct Checkpoint {
    CheckpointFormat format;
    std::filesystem::path path;
    nlohmann::json config;  // HF config.json contents
    std::map<std::string, TensorRef> tensors;
    std::shared_ptr<const Tokenizer> tokenizer;  // null if the checkpoint has none
    std::vector<std::shared_ptr<const MappedFile>> files;

    // The tensor, or an error naming the checkpoint and the missing tensor.
    const TensorRef& tensor(const std::string& name) const;
    // The same after checking its shape; the error names tensor, file and both shapes.
    const TensorRef& tensor(const std::string& name, const std::vector<int64_t>& expected_shape) const;
    bool has(const std::string& name) const { return tensors.count(name) != 0; }
    // Decode to float32 after checking the shape as tensor(name, expected_shape) does. The
    // tensor's mapped pages are released (MappedFile::release): decoding a whole model, or a large
    // one layer at a time, does not leave the source resident beside its decoded copy.
    std::vector<float> load_f32(const std::string& name, const std::vector<int64_t>& expected_shape) const;
};

// Opens a checkpoint by what `path` is:
//  - a directory with config.json and model.safetensors or model.safetensors.index.json (sharded);
//  - a GGUF file (by its magic);
//  - a llama2.c checkpoint file (legacy version-0 layout), with its tokenizer.bin found beside it
//    (tokenizer.bin, or the single tok*.bin file in the same directory).
// `tokenizer_path` (tokenizer.json or llama2.c tokenizer.bin) overrides the tokenizer found.
Checkpoint open_checkpoint(const std::filesystem::path& path, const std::filesystem::path& tokenizer_path = {});

// A JSON file (config.json, an index); errors name the file.
nlohmann::json read_json_file(const std::filesystem::path& path);

}  // namespace spense
