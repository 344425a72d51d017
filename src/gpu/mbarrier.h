// Shared-memory mbarriers for CUDA sources (PTX ISA, mbarrier; sm_90): the handshake between a
// warp that fills shared-memory buffers by asynchronous copies and the warps that consume them.
// A barrier completes a phase when its expected count of arrivals has arrived (and, for TMA, its
// expected bytes have landed); waiters give the parity of the phase they wait for, u & 1 for a
// buffer's fill u (from 0). Arrive releases and a completed wait acquires, so what
// the arriving threads (or their tracked copies) wrote is visible to the waiters after it.
#pragma once

#include <cstdint>

namespace spense::gpu {

// The shared-memory address of p (a generic pointer into shared memory): the operand form of
// these helpers and of the other shared-memory PTX the kernels issue.
__device__ __forceinline__ uint32_t smem_u32(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void mbarrier_init(uint32_t bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}

// Barriers that peers of the cluster arrive on or copy into: after their init, before the cluster
// barrier that tells the peers this CTA has started, so that the peers see them initialized.
__device__ __forceinline__ void fence_mbarrier_init_cluster() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }

__device__ __forceinline__ void mbarrier_arrive(uint32_t bar) { asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory"); }

// One arrival that also expects `bytes` more to land by copies or stores that complete
// transactions on this barrier (TMA, st.async): the phase completes once all have landed.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}

// One arrival once every cp.async this thread has issued so far has landed (counted in the
// barrier's expected count: .noinc).
__device__ __forceinline__ void mbarrier_arrive_on_cp_async(uint32_t bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(bar) : "memory");
}

// The try_wait loop, with the wait's semantics SEM ("" for the default, acquire at CTA scope).
#define SPENSE_MBARRIER_WAIT_LOOP(SEM)                                              \
    "{\n\t.reg .pred done;\n"                                                       \
    "WAIT_%=:\n\t"                                                                  \
    "mbarrier.try_wait.parity" SEM ".shared::cta.b64 done, [%0], %1;\n\t"            \
    "@!done bra WAIT_%=;\n}"

__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
    asm volatile(SPENSE_MBARRIER_WAIT_LOOP("") ::"r"(bar), "r"(parity) : "memory");
}

// The same wait, acquiring at cluster scope: for bytes that peers of the cluster stored by st.async
// (whose completion on the barrier releases at cluster scope).
__device__ __forceinline__ void mbarrier_wait_cluster(uint32_t bar, uint32_t parity) {
    asm volatile(SPENSE_MBARRIER_WAIT_LOOP(".acquire.cluster") ::"r"(bar), "r"(parity) : "memory");
}

#undef SPENSE_MBARRIER_WAIT_LOOP

}  // namespace spense::gpu
