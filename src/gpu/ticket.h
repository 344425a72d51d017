// A ticket counter for CUDA sources: the blocks that each wrote a part of a result take a ticket
// when done, and the block that draws the last one (the only one) combines the parts. For the
// split-K sums of the 2:4 GEMM and the chunks of the decode attention.
#pragma once

namespace spense::gpu {

// Called by every thread that takes part in `sync` (a barrier over the block's writing threads),
// after its writes: true in all of them in the block that draws the last of `count` tickets, which
// also resets the counter for the next launch. The first barrier orders the block's writes before
// thread 0's atomic, whose release makes them visible at GPU scope with it; its acquire, in the
// last block, makes every earlier block's writes visible to this block's threads after the second
// barrier (the pattern of CUTLASS's semaphores). One thread fences, not every thread: a GPU-scope
// fence in each of the 2:4 GEMM's 512 threads (__threadfence) before its ticket cost 0.3-1.3 us a
// launch of Qwen3-32B's down on the H200 (bench/README.md, "The split-K tail").
template <class Sync>
__device__ __forceinline__ bool take_ticket(unsigned* counter, unsigned count, Sync&& sync) {
    __shared__ bool last;
    sync();
    if (threadIdx.x == 0) {
        unsigned old;
        asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(old) : "l"(counter) : "memory");
        last = old == count - 1;
        if (last) *counter = 0;
    }
    sync();
    return last;
}

}  // namespace spense::gpu
