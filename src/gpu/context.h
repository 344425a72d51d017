// The GPU context: library handles, the GEMM workspace, and the caches of searched algorithms and
// built plans that every GEMM on the context shares (gemm.h). One context per device and host
// thread: it is not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <nlohmann/json.hpp>

#include "gpu/device_buffer.h"

namespace spense::gpu {

struct PlanCaches;  // plan_cache.h

// Whether a CUDA device is usable here (false without a driver or device; never throws).
bool cuda_device_available();

class GpuContext {
public:
    // The current CUDA device. Throws spense::Error if there is none.
    GpuContext();
    ~GpuContext();
    GpuContext(const GpuContext&) = delete;
    GpuContext& operator=(const GpuContext&) = delete;

    const cudaDeviceProp& props() const { return props_; }
    cublasLtHandle_t cublaslt() const { return cublaslt_; }
    // The cuSPARSELt handle (a cusparseLtHandle_t*), or null when built without cuSPARSELt.
    const void* cusparselt() const { return cusparselt_.get(); }

    // The GEMM workspace of `stream`, grown to at least `bytes` (growing synchronizes the device):
    // one per stream, so that GEMMs on forked streams never share one.
    void* workspace(size_t bytes, cudaStream_t stream);
    // A second stream for work that may overlap `stream`'s: fork(stream) makes the side stream wait
    // for everything enqueued on `stream` so far and returns it; join(stream) makes `stream` wait
    // for everything enqueued on the side stream since. Both capture into a CUDA graph as a branch.
    cudaStream_t fork(cudaStream_t stream);
    void join(cudaStream_t stream);
    // Scratch for algorithm searches, grown likewise; its contents are the caller's.
    void* search_scratch(size_t bytes);

    PlanCaches& caches() { return *caches_; }

    // Median time of fn() in ms by CUDA events on `stream` over a few runs after a warm-up, each
    // run from a cold, clean L2 (a read over twice its size first): the cost measure of algorithm
    // searches. In a decode step every weight streams from memory once; back-to-back runs would
    // let a weight under the L2 size (an attention projection, a Spense dense region) come from
    // L2 and favour algorithms that lose in the step. A write over L2 instead of the read leaves
    // dirty lines whose write-back lands inside the timed run, which made the searches disagree
    // with bench gemm's table (FP8 down at N = 16 on the H200: our kernel kept at 1.23x where
    // cuSPARSELt took 1.36x; bench/README.md).
    double time_ms(const std::function<void()>& fn, cudaStream_t stream);
    // The same for several candidates, timed in turn within each round so that drift between runs
    // (clocks, the other process on the GPU) falls on all of them alike: the median of each.
    std::vector<double> time_ms(const std::vector<std::function<void()>>& fns, cudaStream_t stream);

    struct Stats {
        int64_t searches = 0;       // (shape, bucket) pairs searched
        int64_t plans = 0;          // (shape, n) plans built
        double search_seconds = 0;  // wall time spent searching
    };
    const Stats& stats() const { return stats_; }
    Stats& stats() { return stats_; }

    // The GPU, driver, CUDA runtime, cuBLASLt and cuSPARSELt versions (the ones loaded at run time).
    nlohmann::json describe() const;
    // Every searched (shape, bucket): the chosen algorithm and its time; every built library plan:
    // whether it takes programmatic edges.
    nlohmann::json plan_report() const;

private:
    cudaDeviceProp props_{};
    cublasLtHandle_t cublaslt_ = nullptr;
    std::unique_ptr<uint8_t[]> cusparselt_;  // storage of a cusparseLtHandle_t
    std::unique_ptr<PlanCaches> caches_;
    std::map<cudaStream_t, DeviceBuffer> workspaces_;
    DeviceBuffer scratch_, l2_flush_, l2_sink_;
    cudaStream_t side_ = nullptr;
    cudaEvent_t start_ = nullptr, stop_ = nullptr, forked_ = nullptr, joined_ = nullptr;
    Stats stats_;
};

}  // namespace spense::gpu
