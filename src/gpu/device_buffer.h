// An owned block of device memory (cudaMalloc / cudaFree). Allocation failures throw spense::Error
// naming what the memory was for and how much was asked.
#pragma once

#include <cstddef>
#include <string>
#include <utility>

namespace spense::gpu {

class DeviceBuffer {
public:
    DeviceBuffer() = default;
    DeviceBuffer(size_t bytes, const std::string& what);
    ~DeviceBuffer();
    DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;

    void* get() const { return ptr_; }
    template <typename T>
    T* as() const {
        return static_cast<T*>(ptr_);
    }
    size_t bytes() const { return bytes_; }

    // Synchronous copies of `n` bytes from the start of the buffer (n <= bytes()).
    void upload(const void* src, size_t n);
    void download(void* dst, size_t n) const;

private:
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
};

}  // namespace spense::gpu
