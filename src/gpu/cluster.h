// Thread-block cluster barriers for CUDA sources (PTX ISA, barrier.cluster; sm_90). Every thread
// of every CTA of the cluster takes part. Arrive and wait may be split, so that a CTA can announce
// that it has started (its shared memory may now receive its peers' stores) and go on working
// while the others start.
#pragma once

#include <cstdint>

namespace spense::gpu {

__device__ __forceinline__ void cluster_arrive_relaxed() { asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.aligned;" ::: "memory"); }
// Arrive with release and wait with acquire: what each CTA wrote to shared memory (its own or a
// peer's) before it is visible to all after it.
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}

// The address of the shared-memory location `smem` (this CTA's, as smem_u32 gives it) in the
// shared memory of CTA `rank` of the cluster.
__device__ __forceinline__ uint32_t map_to_rank(uint32_t smem, unsigned rank) {
    uint32_t remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(smem), "r"(rank));
    return remote;
}

// v stored at `remote` (a peer's shared memory, by map_to_rank), completing sizeof(v) bytes of a
// transaction on that peer's barrier `remote_bar` (st.async): the peer learns of the store from
// its own barrier, so the sender needs no fence, which for a cluster barrier's release also waits
// for every global store it has in flight.
__device__ __forceinline__ void st_async(uint32_t remote, float v, uint32_t remote_bar) {
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.f32 [%0], %1, [%2];" ::"r"(remote), "f"(v), "r"(remote_bar)
                 : "memory");
}
__device__ __forceinline__ void st_async(uint32_t remote, float2 v, uint32_t remote_bar) {
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.f32 [%0], {%1, %2}, [%3];" ::"r"(remote), "f"(v.x), "f"(v.y),
                 "r"(remote_bar)
                 : "memory");
}

}  // namespace spense::gpu
