#include "gpu/device_buffer.h"

#include "gpu/check.h"

namespace spense::gpu {

DeviceBuffer::DeviceBuffer(size_t bytes, const std::string& what) : bytes_(bytes) {
    if (bytes > 0) SPENSE_CUDA_CHECK(cudaMalloc(&ptr_, bytes), what, ": ", bytes, " bytes");
}

DeviceBuffer::~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);  // a destructor cannot throw; a failed free leaks at most
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
        if (ptr_) cudaFree(ptr_);
        ptr_ = std::exchange(o.ptr_, nullptr);
        bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
}

void DeviceBuffer::upload(const void* src, size_t n) {
    SPENSE_CHECK(n <= bytes_, "DeviceBuffer::upload: ", n, " bytes into a buffer of ", bytes_);
    if (n > 0) SPENSE_CUDA_CHECK(cudaMemcpy(ptr_, src, n, cudaMemcpyHostToDevice), n, " bytes");
}

void DeviceBuffer::download(void* dst, size_t n) const {
    SPENSE_CHECK(n <= bytes_, "DeviceBuffer::download: ", n, " bytes from a buffer of ", bytes_);
    if (n > 0) SPENSE_CUDA_CHECK(cudaMemcpy(dst, ptr_, n, cudaMemcpyDeviceToHost), n, " bytes");
}

}  // namespace spense::gpu
