// GGUF reader (versions 2 and 3), memory-mapped.
//
// Byte layout (little endian):
//  1. magic "GGUF" (4 bytes), version u32, tensor_count u64, kv_count u64
//  2. kv_count key/value pairs: key = string, value type u32, value
//       string = u64 length + bytes (no terminator)
//       types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool(u8), 8 string,
//              9 array (element type u32, count u64, elements), 10 u64, 11 i64, 12 f64
//  3. tensor_count tensor infos: name string, n_dims u32, dims u64[n_dims] (innermost first),
//     ggml type u32, offset u64 (relative to the data section, a multiple of the alignment)
//  4. padding to `general.alignment` (default 32), then the data section.
// Every count, length and offset is checked against the file size before use.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/mapped_file.h"

namespace spense {

struct GgufTensor {
    std::string name;
    DType dtype;
    std::vector<int64_t> dims;  // GGUF order: dims[0] is the innermost (contiguous) dimension
    const uint8_t* data;
    size_t nbytes;
};

class GgufFile {
public:
    // Throws spense::Error naming the file and the problem (bad magic, truncation, an unsupported
    // ggml type with the tensor that uses it, offsets outside the file).
    static GgufFile open(const std::filesystem::path& path);

    const std::string& path() const { return file_->path(); }
    const std::shared_ptr<const MappedFile>& file() const { return file_; }
    uint32_t version() const { return version_; }

    // Metadata as JSON: scalars as numbers, bools or strings; arrays as JSON arrays.
    const nlohmann::json& metadata() const { return metadata_; }
    bool has(const std::string& key) const { return metadata_.contains(key); }
    // Typed access; a missing key or a value of the wrong type is an error naming file and key.
    std::string get_string(const std::string& key) const;
    int64_t get_int(const std::string& key) const;
    double get_float(const std::string& key) const;
    const nlohmann::json& get_array(const std::string& key) const;

    const std::vector<GgufTensor>& tensors() const { return tensors_; }

private:
    const nlohmann::json& get(const std::string& key) const;
    std::shared_ptr<const MappedFile> file_;
    uint32_t version_ = 0;
    nlohmann::json metadata_;
    std::vector<GgufTensor> tensors_;
};

}  // namespace spense
