// safetensors files: reading (memory-mapped, every header field checked) and writing.
//
// Byte layout:
//  1. u64 little endian N: the size of the header
//  2. N bytes of UTF-8 JSON: {"__metadata__": {str: str}?, NAME: {"dtype": "F32"|"F16"|"BF16"|...,
//     "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...}; offsets are relative to the
//     byte after the header, and the tensors tile the data section exactly, without gaps or overlap
//  3. the data section, each tensor row-major, little endian
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"

namespace spense {

struct SafetensorsFile {
    std::shared_ptr<const MappedFile> file;
    std::map<std::string, TensorRef> tensors;
    nlohmann::json metadata;  // the "__metadata__" object, or null
};

// Throws spense::Error naming the file and the problem: a truncated file, a header that is not
// JSON or lies about sizes or offsets, an unsupported dtype (naming the tensor).
SafetensorsFile read_safetensors(const std::filesystem::path& path);

// A tensor to write. Its bytes (numel * element size, row-major) are asked of `fill` only when the
// writer reaches the tensor, so that one tensor's bytes at a time need be in memory, however large
// the file.
struct TensorData {
    std::string name;
    DType dtype;  // F32, F16 or BF16
    std::vector<int64_t> shape;
    std::function<void(std::span<uint8_t> bytes)> fill;

    uint64_t nbytes() const;
};

// Writes `path` atomically (a temporary file beside it, then rename), tensors in the order given.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorData>& tensors,
                       const nlohmann::json& metadata = nullptr);

}  // namespace spense
