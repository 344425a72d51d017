// A read-only memory map of a whole file. Tensors of checkpoints point into it, so weights are
// paged in on first touch rather than read whole.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

namespace spense {

class MappedFile {
public:
    // Throws spense::Error naming the path if it is missing, unreadable or not a regular file.
    static std::shared_ptr<const MappedFile> open(const std::filesystem::path& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    const std::string& path() const { return path_; }
    // Drops the pages of [p, p + n), which lie in this map, from the process's resident memory;
    // touched again, they are read back from the file. For data decoded once into memory of its
    // own, so that a large source is not held a second time as mapped pages.
    void release(const uint8_t* p, size_t n) const;

private:
    MappedFile(std::string path, const uint8_t* data, size_t size) : path_(std::move(path)), data_(data), size_(size) {}
    std::string path_;
    const uint8_t* data_;
    size_t size_;
};

}  // namespace spense
