#include "core/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace spense {

AtomicFile::AtomicFile(std::filesystem::path dest) : dest_(std::move(dest)) {
    tmp_ = dest_;
    tmp_ += ".tmp." + std::to_string(::getpid());
    f_ = std::fopen(tmp_.c_str(), "wb");
    if (f_ == nullptr) fail(dest_.string(), ": cannot create (", std::strerror(errno), ")");
}

AtomicFile::~AtomicFile() {
    if (f_ != nullptr) {
        std::fclose(f_);
        std::error_code ec;
        std::filesystem::remove(tmp_, ec);
    }
}

void AtomicFile::write(const void* data, size_t n) {
    if (n > 0 && std::fwrite(data, 1, n, f_) != n) fail(dest_.string(), ": write failed (", std::strerror(errno), ")");
}

void AtomicFile::commit() {
    if (std::fflush(f_) != 0 || ::fsync(::fileno(f_)) != 0)
        fail(dest_.string(), ": flush failed (", std::strerror(errno), ")");
    std::fclose(f_);
    f_ = nullptr;
    std::error_code ec;
    std::filesystem::rename(tmp_, dest_, ec);
    if (ec) {
        std::filesystem::remove(tmp_, ec);
        fail(dest_.string(), ": cannot rename into place (", ec.message(), ")");
    }
}

void write_file_atomic(const std::filesystem::path& dest, std::string_view contents) {
    AtomicFile f(dest);
    f.write(contents);
    f.commit();
}

}  // namespace spense
