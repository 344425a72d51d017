// Atomic writes: output goes to a temporary name in the destination's directory and is renamed
// into place only when complete, so a crash never leaves a half-written file that looks whole.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string_view>

namespace spense {

class AtomicFile {
public:
    explicit AtomicFile(std::filesystem::path dest);
    ~AtomicFile();  // removes the temporary file unless commit() succeeded
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;

    void write(const void* data, size_t n);
    void write(std::string_view s) { write(s.data(), s.size()); }
    // Flushes, syncs and renames onto the destination.
    void commit();

private:
    std::filesystem::path dest_, tmp_;
    std::FILE* f_ = nullptr;
};

// Writes a whole file atomically.
void write_file_atomic(const std::filesystem::path& dest, std::string_view contents);

}  // namespace spense
