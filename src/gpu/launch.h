// Kernel launches of the decode step (CUDA sources only) with programmatic dependent launch (PDL,
// sm_90) and, optionally, a thread-block cluster.
//
// A decode step is a chain of short kernels, so the launch latency between two of them is a
// visible part of the step. A kernel launched by launch_pdl may start while its predecessor on the
// stream still runs: it must call wait_for_predecessor() before it reads anything (griddepcontrol.
// wait returns once the predecessor grid has completed and its writes are visible; since every
// kernel launched so waits before it completes, the order is transitive along the chain). A kernel
// that calls allow_dependents() lets the next PDL kernel start from then on; otherwise the next
// one starts as this one's blocks exit, still sparing the launch latency after completion.
// Captured into a CUDA graph, the launch attribute becomes a programmatic edge. A kernel launched
// without the attribute waits as usual; so do the libraries' GEMMs, except where library_pdl.h
// makes the captured edges into them programmatic (our kernels before them call
// allow_dependents() as soon as they have waited).
#pragma once

#include <cuda_runtime.h>

#include <utility>

namespace spense::gpu {

__device__ __forceinline__ void wait_for_predecessor() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void allow_dependents() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }

struct LaunchShape {
    dim3 grid, block;
    size_t smem = 0;
    unsigned cluster_x = 0;  // CTAs per cluster along x; 0: not a cluster launch
};

// Launches kernel(args...) with PDL; returns the launch's error for the caller to check with context.
template <typename... Params, typename... Args>
cudaError_t launch_pdl(void (*kernel)(Params...), const LaunchShape& shape, cudaStream_t stream, Args&&... args) {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = shape.grid;
    cfg.blockDim = shape.block;
    cfg.dynamicSmemBytes = shape.smem;
    cfg.stream = stream;
    cudaLaunchAttribute attrs[2]{};
    attrs[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.numAttrs = 1;
    if (shape.cluster_x > 0) {
        attrs[1].id = cudaLaunchAttributeClusterDimension;
        attrs[1].val.clusterDim.x = shape.cluster_x;
        attrs[1].val.clusterDim.y = attrs[1].val.clusterDim.z = 1;
        cfg.numAttrs = 2;
    }
    cfg.attrs = attrs;
    return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

}  // namespace spense::gpu
