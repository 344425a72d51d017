// Thread-block cluster barriers for CUDA sources (PTX ISA, barrier.cluster; sm_90). Every thread
// of every CTA of the cluster takes part. Arrive and wait may be split, so that a CTA can announce
// that it has started (its shared memory may now receive its peers' stores) and go on working
// while the others start.
#pragma once

namespace spense::gpu {

__device__ __forceinline__ void cluster_arrive_relaxed() { asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.aligned;" ::: "memory"); }
// Arrive with release and wait with acquire: what each CTA wrote to shared memory (its own or a
// peer's) before it is visible to all after it.
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}

}  // namespace spense::gpu
