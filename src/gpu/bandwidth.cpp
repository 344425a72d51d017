#include "gpu/bandwidth.h"

#include <functional>
#include <vector>

#include "gpu/bench_util.h"
#include "gpu/check.h"
#include "gpu/device_buffer.h"
#include "gpu/kernels.h"

namespace spense::gpu {

namespace {

constexpr size_t kBytes = size_t(1) << 30;

double median_ms(const std::function<void()>& fn, cudaStream_t stream) {
    cudaEvent_t e0, e1;
    SPENSE_CUDA_CHECK(cudaEventCreate(&e0));
    SPENSE_CUDA_CHECK(cudaEventCreate(&e1));
    std::vector<double> t;
    for (int i = 0; i < 12; ++i) {
        SPENSE_CUDA_CHECK(cudaEventRecord(e0, stream));
        fn();
        SPENSE_CUDA_CHECK(cudaEventRecord(e1, stream));
        SPENSE_CUDA_CHECK(cudaEventSynchronize(e1));
        float ms = 0;
        SPENSE_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        if (i >= 2) t.push_back(ms);  // the first two warm up
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return summarize(std::move(t)).median;
}

}  // namespace

double copy_bandwidth(cudaStream_t stream) {
    DeviceBuffer a(kBytes, "bandwidth source"), b(kBytes, "bandwidth destination");
    SPENSE_CUDA_CHECK(cudaMemsetAsync(a.get(), 1, kBytes, stream));
    const double ms = median_ms([&] { SPENSE_CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), kBytes, cudaMemcpyDeviceToDevice, stream)); },
                                stream);
    return 2.0 * double(kBytes) / (ms * 1e-3);
}

double read_bandwidth(cudaStream_t stream) {
    DeviceBuffer a(kBytes, "bandwidth source"), sink(16, "bandwidth sink");
    SPENSE_CUDA_CHECK(cudaMemsetAsync(a.get(), 0, kBytes, stream));
    const double ms = median_ms([&] { launch_read_buffer(a.get(), kBytes, sink.as<float>(), stream); }, stream);
    return double(kBytes) / (ms * 1e-3);
}

}  // namespace spense::gpu
