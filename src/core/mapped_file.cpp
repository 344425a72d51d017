#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace spense {

std::shared_ptr<const MappedFile> MappedFile::open(const std::filesystem::path& path) {
    std::string p = path.string();
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(p, ": cannot open (", std::strerror(errno), ")");
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        fail(p, ": not a regular file");
    }
    size_t size = size_t(st.st_size);
    const uint8_t* data = nullptr;
    if (size > 0) {
        void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int err = errno;
            ::close(fd);
            fail(p, ": cannot map ", size, " bytes (", std::strerror(err), ")");
        }
        data = static_cast<const uint8_t*>(m);
    }
    ::close(fd);
    return std::shared_ptr<const MappedFile>(new MappedFile(p, data, size));
}

void MappedFile::release(const uint8_t* p, size_t n) const {
    SPENSE_CHECK(p >= data_ && p + n <= data_ + size_, path_, ": release of a range outside the map");
    const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
    const uintptr_t begin = uintptr_t(p) / page * page, end = (uintptr_t(p) + n + page - 1) / page * page;
    // The map is private and read-only, so its dropped pages can only come back as the file's.
    // Advice that fails only leaves the pages resident.
    ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

MappedFile::~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace spense
