// Our own 2:4 sparse GEMM kernels for decode sizes (the class using them: native_sparse.h): y = x W^T
// (gemm.h's convention) with W 2:4 along k, streamed from a layout that is exactly the register
// fragments of the sparse tensor-core instructions, so that each warp reads its weight with 16-byte
// fully coalesced loads and no shared memory, and no other kernel runs before or after them.
//
// Why: at decode (N up to a few hundred tokens) a GEMM is bound by the bytes of its weight. A 2:4
// weight moves 0.5625x (BF16: values plus 2-bit indices) or 0.625x (FP8) of the dense bytes, but
// cuSPARSELt's sm_90 kernels stream it at half the copy bandwidth there (bench/README.md).
//
// The instructions. The weight is operand A of the sparse tensor-core instructions, x^T operand B,
// FP32 accumulators; A is 16 weight rows (output channels) of a warp, 2:4 along k, stored
// compressed (the 2 kept values of each group of 4) plus 2 bits per kept value (its position):
//   BF16: k-steps of 32 columns, the fragments of mma.sp m16n8k32 (mma.sync) and of
//         wgmma.mma_async.sp m64nNk32 (4 warps: 64 rows), which are the same for each warp's rows;
//   E4M3: k-steps of 64 columns, the fragments of wgmma.mma_async.sp m64nNk64.e4m3 (native FP8
//         products: sm_90 has no native FP8 mma.sync, ptxas emulates it).
//
// Byte layout (NativeSparseLayout). The weight [m, k] is cut into tiles of 16 rows (m padded to a
// multiple of 32, rows past m zero) and blocks of 128 columns (k padded to a multiple of 512,
// columns past k zero). Tile t, block b starts at byte (t * k_blocks + b) * block_bytes. Lane
// L = 4 g + q (g = L / 4, q = L % 4) owns 16 bytes of values per k-step s, at s * 512 + 16 L, as the
// four A registers r = 0..3 (register r at 4 r), all of row g + 8 (r & 1):
//   BF16: the kept values, in column order, of group q + 4 (r >> 1) of the k-step (4 k-steps);
//   E4M3: the kept codes of groups 2q + 8 (r >> 1) and the next one (2 k-steps);
// then 256 bytes of metadata, 8 per lane: two 32-bit words, the 4 bits of a group being its first
// kept index in bits 0-1 and its second in 2-3 (first < second):
//   BF16: lanes q < 2 hold k-steps 0 and 1 (word i: k-step i) of role p = q, lanes q >= 2 k-steps 2
//         and 3 of role p = q - 2; the word of role p covers groups 4p .. 4p + 3 of the k-step, those
//         of row g in bits 4 (c - 4p), those of row g + 8 in bits 16 + 4 (c - 4p). mma.sp reads
//         lanes q < 2 (the kernel shuffles k-steps 2, 3 there); wgmma's sparsity selector 1 reads
//         lanes q >= 2 directly.
//   E4M3: word i (k-step i) of lane q: row g + 8 (q % 2), groups 8 (q / 2) + c, c < 8, in bits 4c.
// A group with fewer than 2 non-zeros keeps zeros at free positions. block_bytes = 2048 + 256
// (BF16) or 1024 + 256 (FP8): 1.125 or 0.625 bytes per weight, 0.5625x / 0.625x of dense.
// (Blocks ordered by k within groups of 16 tiles instead, so that a CTA's warps read one contiguous
// run at a time, changed nothing beyond the noise on the H200: FP8 gate_up at N = 1 0.0474 ms
// against 0.0456, down 0.0259 against 0.0271.)
//
// The kernels (native_sparse_kernels.cu). A CTA owns 256 rows (or 512) and a range of k (split-K);
// the weight is read straight into registers, several blocks ahead (a register ring), so that loads
// stay in flight across the barriers; x for up to 64 tokens is staged in shared memory by
// cp.async (or TMA) in chunks of k, two chunks ahead (three buffers), once per CTA (or cluster).
//   mma.sync (BF16): 16 warps of one tile up to 16 tokens, 8 warps of two tiles from 32 tokens on
//     (each x fragment read from shared memory then feeds two products); x fragments by ldmatrix.
//   mma.sync pairs (BF16, up to 16 tokens): 16 warps of two tiles, 512 rows a CTA, so that each
//     staged x serves twice the rows: from 9 tokens on the staging of x is a visible part of the
//     time (at Qwen3-32B's gate_up, N = 16, 0.081 -> 0.077 ms on the H200), while down, split
//     finer along k to fill the GPU, is slower so (0.045 -> 0.048 ms): the search picks.
//   wgmma (BF16, E4M3): 4 warpgroups of 64 rows; x staged in PTX's canonical K-major layout, read
//     by the tensor cores through a matrix descriptor.
//   wgmma cluster (BF16, E4M3): the same products, by clusters of 2 CTAs on neighbouring row
//     groups; x comes by TMA (128-byte swizzle), each box multicast into both CTAs, so that it
//     leaves L2 once per 512 rows. From 32 tokens on the re-reading of x is what the wgmma kernel
//     loses to (H200, in turn with it: BF16 gate_up at N = 64 0.137 -> 0.098 ms, FP8 0.082 ->
//     0.063; bench/README.md); clusters of 4 were no faster than 2.
// With split-K, partial sums go to an FP32 workspace by vector atomics and the last CTA of each
// row group (a ticket counter) writes y and clears the workspace, so one launch does everything;
// or, k in parts (gemm.h), each split writes its partial sums as its own part of y for the reader
// to add: no workspace, ticket or last pass, which cost Qwen3-32B's FP8 down on the H200 1-2 us
// at one token and 5 us at 32 (bench/results/gemm-h200-splitk-tail.md).
// The kernels launch with programmatic dependent launch, each CTA loading its register ring of
// weight blocks before waiting for the kernel that writes x (launch.h). On the H200 that left the
// batch-1 decode step unchanged (FP8, 2:4 MLPs, 8.180 / 8.016 ms against 8.106 / 8.230 in
// interleaved runs) and took the batch-32 BF16 step from 13.24 to 12.95 ms (in turn,
// bench/results/decode-h200-native-pdl.md).
// More than 64 tokens run as slices of 64 (each re-streams the weight: the library kernels win
// there). The epilogue computes, into BF16 or float32 y,
//   y[r, j] = out_scale[j] * (acc[r, j] + (accumulate ? y[r, j] : 0))   (out_scale optional)
// so that an FP8 GEMM that runs last on an output applies the per-output-channel factor itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <cuda_runtime.h>

#include "gpu/gemm_dtype.h"
#include "gpu/kernels.h"

namespace spense::gpu {

struct NativeSparseLayout {
    static constexpr int64_t kTileRows = 16, kRowGranule = 32;  // rows of a tile; m is padded to kRowGranule
    static constexpr int64_t kBlockK = 128, kKGranule = 512;    // columns of a block; k is padded to kKGranule
    static constexpr int64_t kMaxTokensPerSlice = 64;            // tokens of one launch slice

    GemmDType dtype = GemmDType::BF16;
    int64_t m = 0, k = 0;
    int64_t tiles = 0, k_blocks = 0;  // padded

    static NativeSparseLayout make(GemmDType dtype, int64_t m, int64_t k);
    SPENSE_HOST_DEVICE int64_t block_bytes() const { return (dtype == GemmDType::BF16 ? 2048 : 1024) + 256; }
    size_t bytes() const { return size_t(tiles * k_blocks * block_bytes()); }
    int64_t k_units() const { return k_blocks / 4; }           // split-K divides these (512 columns each)
    int64_t row_groups() const { return (tiles * 16 + 255) / 256; }  // 256-row groups: the most CTAs of any kernel along m
    static int64_t slices(int64_t n) { return (n + kMaxTokensPerSlice - 1) / kMaxTokensPerSlice; }
    // Split-K workspace of n tokens: floats and ticket counters.
    size_t workspace_floats(int64_t n) const;
    size_t counters(int64_t n) const { return size_t(slices(n) * row_groups()); }
};

// The layout of a row-major [m, k] 2:4 weight (BF16 or E4M3 codes) computed on the host, by the
// same per-lane encoding the device conversion runs: for tests. Throws on a group of 4 with more
// than 2 non-zeros.
std::vector<uint8_t> encode_native_2to4_host(const NativeSparseLayout& layout, const void* w);

// The device conversion of `pruned` (row-major [m, k] on the device) into `out` (layout.bytes());
// *bad (zeroed first) counts lanes that met a group with more than 2 non-zeros.
void launch_native_2to4_convert(const NativeSparseLayout& layout, const void* pruned, void* out, unsigned* bad, cudaStream_t stream);

// The kernel of a launch: all serve BF16, only the wgmma kernels serve E4M3; mma.sync pairs runs up
// to 16 tokens (native_kernel_serves).
enum class NativeKernel { MmaSync, MmaSyncPairs, Wgmma, WgmmaCluster };
const char* native_kernel_name(NativeKernel kernel);
bool native_kernel_serves(NativeKernel kernel, GemmDType dtype, int64_t n);
// CTAs along m of a launch: the kernel's CTAs own 256 rows of the weight, or 512 (pairs); the
// cluster kernel's are rounded up to whole clusters (the padding CTA only helps stage x).
int64_t native_row_ctas(const NativeSparseLayout& layout, NativeKernel kernel);

struct NativeGemmArgs {
    NativeKernel kernel = NativeKernel::Wgmma;
    NativeSparseLayout layout;
    const void* w = nullptr;  // layout.bytes() on the device
    const void* x = nullptr;  // [n, ldb], 16-byte aligned, ldb * element bytes a multiple of 16
    void* y = nullptr;        // [n, ldc] of `out`
    GemmOut out = GemmOut::BF16;
    const float* out_scale = nullptr;
    float* workspace = nullptr;   // splits > 1 with k whole: layout.workspace_floats(n), zero
    unsigned* counters = nullptr;  // splits > 1 with k whole: layout.counters(n), zero
    int64_t ldb = 0, ldc = 0, n = 0;
    int splits = 1;  // 1 .. layout.k_units()
    bool k_parts = false;  // split i writes its partial products into y's rows [i n, (i + 1) n); not with accumulate
    bool accumulate = false;
};
// y = out_scale * (x W^T + (accumulate ? y : 0)), or with k_parts the splits' parts of it;
// leaves workspace and counters zero.
void launch_native_2to4_gemm(const NativeGemmArgs& args, cudaStream_t stream);

}  // namespace spense::gpu
