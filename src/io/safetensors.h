// safetensors files: reading (memory-mapped, every header field checked) and writing.
//
// Byte layout:
//  1. u64 little endian N: the size of the header
//  2. N bytes of UTF-8 JSON: {"__metadata__": {str: str}?, NAME: {"dtype": "F32"|"F16"|"BF16"|...,
//     "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...}; offsets are relative to the
//     byte after the header, and the tensors tile the data section exactly, without gaps or overlap
//  3. the data section, each tensor row-major, little endian
#pragma once

#include <filesystem>
#include <map>
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

struct TensorData {
    std::string name;
    DType dtype;  // F32, F16 or BF16
    std::vector<int64_t> shape;
    const void* data;  // numel * element size bytes
};

// Writes `path` atomically (a temporary file beside it, then rename), tensors in the order given.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorData>& tensors,
                       const nlohmann::json& metadata = nullptr);

}  // namespace spense
