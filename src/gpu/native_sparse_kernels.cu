// The native 2:4 GEMM kernels and their layout conversion (native_sparse_kernels.h).
#include "gpu/native_sparse_kernels.h"

#include <cuda.h>  // CUtensorMap (the encoder comes through the runtime's driver entry point)

#include <algorithm>

#include "core/error.h"
#include "gpu/check.h"
#include "gpu/cluster.h"
#include "gpu/launch.h"
#include "gpu/mbarrier.h"
#include "gpu/ticket.h"

namespace spense::gpu {

namespace {

constexpr int kRowsPerCta = 256;  // 16 tiles
// The warps of a CTA for NT 8-token tiles. Up to 16 tokens, 16 warps of one tile, which keep more
// weight loads in flight; from 32 tokens on, 8 warps of two tiles, so that each x fragment read
// from shared memory feeds two products. Measured on the H200 (BF16 speedup over dense, gate_up):
// N = 1 1.61x (two tiles) -> 1.68x (one tile), N = 8 1.54x -> 1.61x, N = 16 equal; N = 32 1.31x
// (two tiles) against 1.23x (one tile), N = 64 0.95x against 0.75x.
// PAIRS (NativeKernel::MmaSyncPairs, NT <= 2): 16 warps of two tiles, 512 rows a CTA, so that x
// is staged once per 512 rows (122 registers a thread at N = 16). Measured on the H200 beside the
// 256-row shape in one run: BF16 gate_up at N = 16 0.0775 against 0.0823 ms, down 0.0488 against
// 0.0450 (split 10 ways instead of 5 to fill the GPU); hence a kernel of its own for the search.
template <int NT, bool PAIRS>
struct WarpShape {
    static_assert(!PAIRS || NT <= 2, "pairs of tiles at 16 warps fit the registers up to 16 tokens");
    static constexpr int kTilesPerWarp = PAIRS || NT > 2 ? 2 : 1;
    static constexpr int kWarps = PAIRS || NT <= 2 ? 16 : 8, kThreads = kWarps * 32;
    static constexpr int kRows = kWarps * kTilesPerWarp * 16;  // of a CTA
};
constexpr int64_t kXBufferBytes = 64 << 10;               // x staged per chunk (at least 512 columns)
constexpr int kXBuffers = 3;                              // chunks of x in shared memory: this one, two in flight
constexpr int kMaxNTiles = int(NativeSparseLayout::kMaxTokensPerSlice / 8);

__host__ __device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// ---- the per-lane encoding, shared by the device conversion and the host reference ----

// Element (row, col) of the pruned weight as its raw bits (0 outside [m, k]).
struct Source {
    const uint8_t* w;
    int64_t m, k;
    int elem;  // bytes per element
    SPENSE_HOST_DEVICE uint32_t at(int64_t row, int64_t col) const {
        if (row >= m || col >= k) return 0;
        const uint8_t* p = w + (row * k + col) * elem;
        return elem == 2 ? uint32_t(p[0]) | uint32_t(p[1]) << 8 : p[0];
    }
};

// The group of 4 columns starting at col of `row`: its 2 kept values (packed low to high, each
// `elem` bytes) and the 4-bit metadata (first index in bits 0-1, second in 2-3, first < second).
// Returns false for more than 2 non-zeros. Zero is +0 or -0 (the sign bit alone).
struct Group {
    uint32_t values = 0, meta = 0;
};
SPENSE_HOST_DEVICE bool encode_group(const Source& s, int64_t row, int64_t col, Group* out) {
    const uint32_t sign = s.elem == 2 ? 0x8000u : 0x80u;
    int idx[2] = {-1, -1}, count = 0;
    for (int i = 0; i < 4; ++i)
        if ((s.at(row, col + i) & ~sign) != 0) {
            if (count == 2) return false;
            idx[count++] = i;
        }
    if (count == 0) {
        idx[0] = 0;
        idx[1] = 1;
    } else if (count == 1) {  // pair the kept value with a free position, in order
        const int other = idx[0] == 0 ? 1 : 0;
        idx[1] = idx[0] > other ? idx[0] : other;
        idx[0] = idx[0] > other ? other : idx[0];
    }
    const int bits = 8 * s.elem;
    out->values = s.at(row, col + idx[0]) | s.at(row, col + idx[1]) << bits;
    out->meta = uint32_t(idx[0]) | uint32_t(idx[1]) << 2;
    return true;
}

// One lane's part of (tile, block), in the fragments of the k-steps of the block
// (native_sparse_kernels.h): its value registers, and its two metadata words.
SPENSE_HOST_DEVICE bool encode_lane(const Source& s, const NativeSparseLayout& L, int64_t tile, int64_t block, int lane, uint8_t* base) {
    const int g = lane / 4, q = lane % 4;
    uint8_t* blk = base + (tile * L.k_blocks + block) * L.block_bytes();
    const int64_t row0 = tile * 16 + g, col0 = block * NativeSparseLayout::kBlockK;
    uint8_t* meta = blk + L.block_bytes() - 256 + lane * 8;
    Group grp;
    if (L.dtype == GemmDType::BF16) {
        // 4 k-steps of 32 columns; register r: row g + 8 (r & 1), group q + 4 (r >> 1).
        for (int st = 0; st < 4; ++st)
            for (int r = 0; r < 4; ++r) {
                if (!encode_group(s, row0 + 8 * (r & 1), col0 + 32 * st + 4 * (q + 4 * (r >> 1)), &grp)) return false;
                uint8_t* p = blk + st * 512 + lane * 16 + r * 4;
                for (int i = 0; i < 4; ++i) p[i] = uint8_t(grp.values >> (8 * i));
            }
        // Lanes q < 2 hold k-steps 0, 1 of role q; lanes q >= 2 k-steps 2, 3 of role q - 2. The word of
        // role p: groups 4p + c, c < 4, of row g in bits 4c, of row g + 8 in bits 16 + 4c.
        for (int i = 0; i < 2; ++i) {
            const int st = q < 2 ? i : 2 + i, role = q % 2;
            uint32_t w = 0;
            for (int half = 0; half < 2; ++half)
                for (int c = 0; c < 4; ++c) {
                    if (!encode_group(s, row0 + 8 * half, col0 + 32 * st + 4 * (4 * role + c), &grp)) return false;
                    w |= grp.meta << (16 * half + 4 * c);
                }
            for (int j = 0; j < 4; ++j) meta[4 * i + j] = uint8_t(w >> (8 * j));
        }
        return true;
    }
    // FP8: 2 k-steps of 64 columns; register r: row g + 8 (r & 1), groups 2q + 8 (r >> 1) and the
    // next (2 codes each).
    for (int st = 0; st < 2; ++st)
        for (int r = 0; r < 4; ++r)
            for (int i = 0; i < 2; ++i) {
                if (!encode_group(s, row0 + 8 * (r & 1), col0 + 64 * st + 4 * (2 * q + 8 * (r >> 1) + i), &grp)) return false;
                uint8_t* p = blk + st * 512 + lane * 16 + r * 4 + 2 * i;
                p[0] = uint8_t(grp.values);
                p[1] = uint8_t(grp.values >> 8);
            }
    // Word i (k-step i): row g + 8 (q % 2), groups 8 (q / 2) + c, c < 8, in bits 4c.
    for (int st = 0; st < 2; ++st) {
        uint32_t w = 0;
        for (int c = 0; c < 8; ++c) {
            if (!encode_group(s, row0 + 8 * (q % 2), col0 + 64 * st + 4 * (8 * (q / 2) + c), &grp)) return false;
            w |= grp.meta << (4 * c);
        }
        for (int j = 0; j < 4; ++j) meta[4 * st + j] = uint8_t(w >> (8 * j));
    }
    return true;
}

__global__ void convert_kernel(Source s, NativeSparseLayout L, uint8_t* out, unsigned* bad) {
    const int64_t id = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (id >= L.tiles * L.k_blocks * 32) return;
    const int lane = int(id % 32);
    const int64_t tb = id / 32;
    if (!encode_lane(s, L, tb / L.k_blocks, tb % L.k_blocks, lane, out)) atomicAdd(bad, 1u);
}

// ---- the GEMM kernels ----

// Per dtype: uint4 of values per lane and block, k-steps per block.
template <GemmDType T>
struct Traits;
template <>
struct Traits<GemmDType::BF16> {
    static constexpr int kVecs = 4, kSteps = 4;  // k-steps of 32 columns
};
template <>
struct Traits<GemmDType::FP8> {
    static constexpr int kVecs = 2, kSteps = 2;  // k-steps of 64 columns
};

template <GemmDType T>
struct Frag {
    uint4 v[Traits<T>::kVecs];  // v[s]: k-step s
    uint2 meta;
};

// The weight is read once: no L1 allocation. (Asking L2 for 256-byte fetches, .L2::256B, was slower
// on the H200: FP8 gate_up at N = 1 0.050 ms against 0.047, BF16 0.084 against 0.074. So was
// fetching each warp's blocks into L2 ahead of its register ring, cp.async.bulk.prefetch.L2 of the
// block 4 or 8 after the one a ring slot takes, in the wgmma kernels: in turn on the H200, 7-14%
// slower at every N, e.g. FP8 gate_up at N = 1 0.0515 / 0.0531 ms against 0.0455, BF16 at
// N = 32 0.0880 / 0.0925 against 0.0779. And, in the FP8 cluster kernel, bringing each warp's
// blocks through a ring of 6 or 8 shared-memory slots by bulk copies (cp.async.bulk, one 1280-byte
// block a copy on an mbarrier of its slot; the register ring of 2 filled from the slots; x buffers
// halved or quartered to make room): 0.0561 / 0.0606 / 0.0701 ms at N = 16 / 32 / 64 against
// 0.0485 / 0.0489 / 0.0550; with one 5 KB copy per 4 blocks into 2 group slots a warp (8 blocks
// on their way, the ring of 4 filled from them), 0.0507 / 0.0545 at N = 16 / 32 against 0.0489 /
// 0.0496. The L2 eviction hint evict_first on these loads (createpolicy) changed
// nothing measurable: FP8 gate_up at N = 64 0.0542 / 0.0546 ms against 0.0547 / 0.0545. Nor did
// the libraries' way pay, in a probe outside the tree: the compressed values read by wgmma from
// shared memory (A descriptor), 20 KB stages filled by one producer warp's bulk copies, 4-8 stages
// ahead: FP8 gate_up 0.0513-0.0580 ms at N = 1-64 against 0.0470-0.0547 here,
// results/gemm-h200-smem-a-probe.md.)
__device__ __forceinline__ uint4 load_stream16(const uint8_t* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}
__device__ __forceinline__ uint2 load_stream8(const uint8_t* p) {
    uint2 r;
    asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(r.x), "=r"(r.y) : "l"(p));
    return r;
}

struct KernelArgs {
    const uint8_t* w;
    const uint8_t* x;
    void* y;  // BF16, or float32 with f32_out
    const float* out_scale;
    float* workspace;
    unsigned* counters;
    int64_t m, k, ldb, ldc, n;
    int64_t tiles, k_blocks;
    int64_t part_elems;  // k in parts: elements between the parts of y, split i writing part i; else 0
    int splits;
    int chunk_blocks;  // k-blocks of x per shared-memory buffer (a multiple of 4)
    bool accumulate, f32_out;
};

template <GemmDType T>
__device__ __forceinline__ void load_block(const KernelArgs& a, int64_t tile, int64_t block, int lane, Frag<T>& f) {
    constexpr int V = Traits<T>::kVecs;
    const uint8_t* p = a.w + (tile * a.k_blocks + block) * (V * 512 + 256);
#pragma unroll
    for (int s = 0; s < V; ++s) f.v[s] = load_stream16(p + s * 512 + lane * 16);
    f.meta = load_stream8(p + V * 512 + lane * 8);
}

// cp.async of x rows [n0, n0 + rows) x columns [block0 * 128, + blocks * 128) (E bytes an element),
// 16-byte segment c of row r to dst + at(r, c), zeros past n and k; one commit group. Consecutive
// threads take consecutive segments of a row or, kCoreMatrices (rows a multiple of 8), the lanes of
// a warp 8 rows x 4 consecutive segments: 64 contiguous bytes of each row from global memory and,
// in the core-matrix layout, 512 contiguous bytes of shared memory (conflict-free). Measured on the
// H200, FP8 gate_up, in consecutive runs: one segment of 32 consecutive rows a warp instead (32
// cache lines an instruction) took 0.0847 ms at N = 64 against 0.0800, 0.0678 against 0.0650 at
// N = 32. Also measured and left out: spreading the staging of the next chunk over the blocks of
// the current one instead of all at once when a chunk begins (0.0873 ms at N = 64, 0.0476 against
// 0.0450 at N = 1), and starting neighbouring CTAs at different k units so that they do not read
// the same columns of x at once (0.0810 at N = 64, 0.0511 at N = 1).
// Nsight Compute's source counters on the FP8 wgmma kernel (Qwen3-32B gate_up; bench/README.md,
// `run_decode_device.sh ncusource`) put 30% of the warps' stall samples at N = 32 in this loop, its
// cp.async held back by the memory pipeline that the weight loads fill. What costs is the traffic
// (bench/README.md's ablation), not the issue of the copies: taking the instructions and the waits
// off the loop did not make the kernel faster (H200, FP8 gate_up, runs of two builds in turn):
// each thread keeping one row and stepping along it, four copies unrolled, padding rows zeroed
// once, 0.0623 / 0.0628 ms against 0.0646 / 0.0638 at N = 32 but 0.0579 / 0.0573 against 0.0550 /
// 0.0547 at N = 16; a producer warp staging every chunk while the 16 others compute (mbarriers
// between them), 0.126 ms at N = 32 and 0.075 at N = 1 against 0.064 and 0.046: one warp's copies
// could not keep up.
template <int E, bool kCoreMatrices, class At>
__device__ void stage_x(const KernelArgs& a, int64_t n0, int rows, int64_t block0, int blocks, uint8_t* dst, At at) {
    const int segs = blocks * int(NativeSparseLayout::kBlockK) * E / 16;
    for (int i = threadIdx.x; i < rows * segs; i += blockDim.x) {
        int r = i / segs, c = i % segs;
        if constexpr (kCoreMatrices) {
            const int group = i / 32, lane = i % 32, octets = rows / 8;
            r = group % octets * 8 + lane % 8;
            c = group / octets * 4 + lane / 8;
        }
        const int64_t col = block0 * NativeSparseLayout::kBlockK + int64_t(c) * (16 / E);
        const int64_t row = n0 + r;
        int bytes = 0;
        const uint8_t* src = a.x;
        if (row < a.n && col < a.k) {
            bytes = int(imin(16, (a.k - col) * E));
            src = a.x + (row * a.ldb + col) * E;
        }
        const uint32_t d = smem_u32(dst + at(r, c));
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(bytes));
    }
    asm volatile("cp.async.commit_group;");
}

// y[row, j] before this GEMM's write: the accumulated term (0 without accumulate or out of range).
// F32: y is float32 (== a.f32_out; a template argument, so that the epilogue's reads stay batched).
template <bool F32>
__device__ __forceinline__ float old_y(const KernelArgs& a, int64_t row, int64_t j) {
    if (!a.accumulate || row >= a.n || j >= a.m) return 0.0f;
    const int64_t i = row * a.ldc + j;
    if constexpr (F32)
        return static_cast<const float*>(a.y)[i];
    else
        return __bfloat162float(static_cast<const bf16*>(a.y)[i]);
}

__device__ __forceinline__ float out_scale_of(const KernelArgs& a, int64_t j) { return a.out_scale && j < a.m ? a.out_scale[j] : 1.0f; }

// y[row, j] = scale * (sum + old), with old from old_y and scale from out_scale_of; with k in
// parts, into this CTA's split's part.
template <bool F32>
__device__ __forceinline__ void write_y(const KernelArgs& a, int64_t row, int64_t j, float sum, float old, float scale) {
    if (row >= a.n || j >= a.m) return;
    const int64_t i = int64_t(blockIdx.y) * a.part_elems + row * a.ldc + j;
    const float v = (sum + old) * scale;
    if constexpr (F32)
        static_cast<float*>(a.y)[i] = v;
    else
        static_cast<bf16*>(a.y)[i] = __float2bfloat16(v);
}

// The epilogue of both kernels (THREADS a CTA), over the accumulators of a warp's TPW tiles from
// tile0 (rows [16 tile0, + 16 TPW)) by NT 8-token tiles from token n0, in the fragment layout of
// the tensor-core instructions: acc[t][nt][0..1] = D[row g][tokens 2q, 2q + 1], [2..3] the same of
// row g + 8. Without split-K, y directly, and so with k in parts, each split's partial sums into its
// part of y. Otherwise partial sums into the workspace [slice][tiles * 16 rows][8 NT tokens] by
// vector atomics; the last CTA of the row group (a ticket counter) writes y from the sums and
// clears the workspace. Every thread of the CTA calls it.
// Each thread issues all its reads (of y when accumulating, of the workspace) before its first
// write: the compiler must assume that a write may alias a later read, so reads interleaved with
// writes each wait a full memory latency (the last CTA's loop over 256 rows x 32 tokens did so 16
// times in a row).
template <int NT, int TPW, int THREADS, int CTA_ROWS, bool F32>
__device__ void store_acc_as(const KernelArgs& a, const float (&acc)[TPW][NT][4], int64_t tile0, bool active, int64_t n0) {
    const int lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
    if (a.splits == 1 || a.part_elems != 0) {
        if (!active) return;
        // Element i of a fragment: row g + 8 (i / 2), token 2 q + i % 2.
        const auto row_of = [&](int nt, int i) { return n0 + nt * 8 + 2 * q + i % 2; };
        const auto col_of = [&](int t, int i) { return (tile0 + t) * 16 + g + 8 * (i / 2); };
        float old[TPW][NT][4], scale[TPW][2];
#pragma unroll
        for (int t = 0; t < TPW; ++t) {
            scale[t][0] = out_scale_of(a, col_of(t, 0));
            scale[t][1] = out_scale_of(a, col_of(t, 2));
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int i = 0; i < 4; ++i) old[t][nt][i] = old_y<F32>(a, row_of(nt, i), col_of(t, i));
        }
#pragma unroll
        for (int t = 0; t < TPW; ++t)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int i = 0; i < 4; ++i) write_y<F32>(a, row_of(nt, i), col_of(t, i), acc[t][nt][i], old[t][nt][i], scale[t][i / 2]);
        return;
    }
    constexpr int width = NT * 8;
    const int64_t groups = (a.tiles * 16 + CTA_ROWS - 1) / CTA_ROWS;  // a cluster's padding CTA (blockIdx.x == groups) holds no rows
    if (int64_t(blockIdx.x) >= groups) return;
    float* ws = a.workspace + int64_t(blockIdx.z) * a.tiles * 16 * width;
    if (active)
#pragma unroll
        for (int t = 0; t < TPW; ++t)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                const int64_t j = (tile0 + t) * 16 + g;
                float* p = ws + j * width + nt * 8 + 2 * q;
                atomicAdd(reinterpret_cast<float2*>(p), make_float2(acc[t][nt][0], acc[t][nt][1]));
                atomicAdd(reinterpret_cast<float2*>(p + 8 * width), make_float2(acc[t][nt][2], acc[t][nt][3]));
            }
    if (!take_ticket(a.counters + int64_t(blockIdx.z) * groups + blockIdx.x, unsigned(a.splits), [] { __syncthreads(); })) return;
    // Thread: output channel j (consecutive threads, consecutive channels: y's writes coalesce) and
    // a run of kPer tokens from r0, its workspace row's contiguous float4s; kBatch tokens at a time.
    constexpr int kPer = width * CTA_ROWS / THREADS, kBatch = kPer < 16 ? kPer : 16;
    static_assert(kPer % kBatch == 0 && kBatch % 4 == 0, "whole float4s of the workspace");
    const int64_t j = int64_t(blockIdx.x) * CTA_ROWS + threadIdx.x % CTA_ROWS;
    const int r0 = threadIdx.x / CTA_ROWS * kPer;
    const float scale = out_scale_of(a, j);
    if (j < a.tiles * 16)
#pragma unroll 1
        for (int b = r0; b < r0 + kPer; b += kBatch) {
            float4* p = reinterpret_cast<float4*>(ws + j * width + b);
            float sum[kBatch], old[kBatch];
#pragma unroll
            for (int u = 0; u < kBatch / 4; ++u) {
                const float4 f = __ldcg(p + u);
                sum[4 * u] = f.x, sum[4 * u + 1] = f.y, sum[4 * u + 2] = f.z, sum[4 * u + 3] = f.w;
            }
#pragma unroll
            for (int r = 0; r < kBatch; ++r) old[r] = old_y<F32>(a, n0 + b + r, j);
#pragma unroll
            for (int u = 0; u < kBatch / 4; ++u) __stcg(p + u, make_float4(0.0f, 0.0f, 0.0f, 0.0f));
#pragma unroll
            for (int r = 0; r < kBatch; ++r) write_y<F32>(a, n0 + b + r, j, sum[r], old[r], scale);
        }
}

// The epilogue for y's type, chosen once outside its loops.
template <int NT, int TPW, int THREADS, int CTA_ROWS>
__device__ void store_acc(const KernelArgs& a, const float (&acc)[TPW][NT][4], int64_t tile0, bool active, int64_t n0) {
    if (a.f32_out)
        store_acc_as<NT, TPW, THREADS, CTA_ROWS, true>(a, acc, tile0, active, n0);
    else
        store_acc_as<NT, TPW, THREADS, CTA_ROWS, false>(a, acc, tile0, active, n0);
}

// This CTA's k-blocks, in whole units of 4 blocks (512 columns), and the blocks of its chunk c
// from kb: the first chunk is one unit, so that the products start as soon as 512 columns of x have
// landed (H200, two runs side by side: 1-3% at N <= 16, e.g. BF16 gate_up at N = 1 75.6 -> 74.7 us).
// Register rings divide a unit, so block i of the range is in ring slot i % depth.
struct KRange {
    int64_t kb0, kb1;
    int chunk_blocks;
    __device__ KRange(const KernelArgs& a) : chunk_blocks(a.chunk_blocks) {
        const int64_t units = a.k_blocks / 4;
        kb0 = units * blockIdx.y / a.splits * 4;
        kb1 = units * (blockIdx.y + 1) / a.splits * 4;
    }
    __device__ int chunk(int c, int64_t kb) const { return int(imin(c == 0 ? 4 : chunk_blocks, kb1 - kb)); }
};

// The staging of x in kXBuffers rotating buffers, two chunks ahead of the products. With cp.async,
// one commit group a chunk (empty past the range: stage_x of 0 blocks), so that when chunk c
// begins, `cp.async.wait_group 1` leaves only chunk c + 1 in flight. Chunk c + 2 goes into the
// buffer of chunk c - 1 once the barrier that begins chunk c has passed, which every thread
// reaches after its products on chunk c - 1: one barrier a chunk (the cluster kernel: an mbarrier
// a buffer for its TMA boxes, and a cluster barrier). (Two buffers, staged one chunk
// ahead behind a second barrier at each chunk's end, took 2-4.5% longer on the H200 for gate_up at
// BF16 N = 1, 16 and FP8 N = 32, 64: results/gemm-h200-x-buffers.md.)
struct XSchedule {
    const KRange& kr;
    int staged = 0;      // chunks issued
    int64_t kb_next;     // first block of chunk `staged`
    __device__ explicit XSchedule(const KRange& r) : kr(r), kb_next(r.kb0) {}
    template <class Stage>
    __device__ void next(Stage&& stage) {  // issues chunk `staged`: stage(chunk, first block, blocks >= 0)
        const int blocks = max(kr.chunk(staged, kb_next), 0);
        stage(staged, kb_next, blocks);
        kb_next += blocks;
        ++staged;
    }
    template <class Stage>
    __device__ void prologue(Stage&& stage) {
        next(stage);
        next(stage);
    }
};

// ---- mma.sync: BF16, the weight and x fragments in registers ----

__device__ __forceinline__ void mma_sp_bf16(float (&d)[4], const uint4& a, const uint32_t (&b)[4], uint32_t meta) {
    asm volatile("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(meta));
}

// The products of one weight block (the TPW tiles of the warp) with the staged x (row stride rw
// words); `col_word` is the block's first word within an x row.
template <int NT, int TPW>
__device__ __forceinline__ void mma_block(const Frag<GemmDType::BF16> (&f)[TPW], const uint32_t* buf, int rw, int col_word, int lane,
                                          float (&acc)[TPW][NT][4]) {
    // Metadata: lanes q < 2 hold k-steps 0, 1 and take 2, 3 from lane + 2 (native_sparse_kernels.h).
    uint32_t meta[TPW][4];
#pragma unroll
    for (int t = 0; t < TPW; ++t) {
        meta[t][0] = f[t].meta.x;
        meta[t][1] = f[t].meta.y;
        meta[t][2] = __shfl_down_sync(0xffffffffu, f[t].meta.x, 2);
        meta[t][3] = __shfl_down_sync(0xffffffffu, f[t].meta.y, 2);
    }
    // B fragments: token nt * 8 + g, words 4 i + q of the k-step's 16 (columns 8 i + 2 q, +1): the
    // four 8x8 matrices (8 tokens by 8 columns) i = 0..3 of one ldmatrix.x4, whose lanes 8 i + j give
    // the address of token j's row of matrix i: one instruction instead of four ld.shared. Read one
    // k-step at a time, in program order (volatile), so that the compiler does not hoist every read
    // of the block into registers and spill.
    const uint32_t base = smem_u32(buf + (lane % 8) * rw + col_word + 4 * (lane / 8));
#pragma unroll
    for (int s = 0; s < 4; ++s) {
        uint32_t b[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
            asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                         : "=r"(b[nt][0]), "=r"(b[nt][1]), "=r"(b[nt][2]), "=r"(b[nt][3])
                         : "r"(base + 4 * ((nt * 8) * rw + s * 16)));
#pragma unroll
        for (int t = 0; t < TPW; ++t)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) mma_sp_bf16(acc[t][nt], f[t].v[s], b[nt], meta[t][s]);
    }
}

// Blocks in a warp's register ring. (Twice as many for warps of one tile, at the same registers a
// thread, were measured on the H200 and were no faster at N = 1.)
constexpr int kMmaSyncStages = 2;

// grid: (groups of Shape::kRows rows, splits, token slices of 8 NT). Dynamic shared memory: the
// kXBuffers x buffers (XSchedule) of 8 NT rows, row stride rw words.
template <int NT, bool PAIRS>
__global__ void __launch_bounds__(WarpShape<NT, PAIRS>::kThreads, 1) mma_sync_kernel(KernelArgs a) {
    using Shape = WarpShape<NT, PAIRS>;
    constexpr GemmDType T = GemmDType::BF16;
    constexpr int TPW = Shape::kTilesPerWarp, R = kMmaSyncStages, ROWS = NT * 8;
    extern __shared__ uint4 smem_raw[];
    const int rw = a.chunk_blocks * int(NativeSparseLayout::kBlockK) / 2 + 4;  // words; == 4 mod 32: conflict-free B reads
    const auto buf = [&](int c) { return reinterpret_cast<uint32_t*>(smem_raw) + (c % kXBuffers) * ROWS * rw; };
    const auto at = [rw](int r, int c) { return r * rw * 4 + c * 16; };

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t tile0 = int64_t(blockIdx.x) * (Shape::kRows / 16) + warp * TPW;
    const bool active = tile0 < a.tiles;  // tiles come in pairs (m padded to 32)
    const int64_t n0 = int64_t(blockIdx.z) * ROWS;
    const KRange kr(a);

    float acc[TPW][NT][4] = {};
    Frag<T> ring[R][TPW];
    if (active)
#pragma unroll
        for (int s = 0; s < R; ++s)
#pragma unroll
            for (int t = 0; t < TPW; ++t) load_block<T>(a, tile0 + t, kr.kb0 + s, lane, ring[s][t]);
    wait_for_predecessor();

    XSchedule xs(kr);
    const auto stage = [&](int c, int64_t kb, int blocks) {
        stage_x<2, false>(a, n0, ROWS, kb, blocks, reinterpret_cast<uint8_t*>(buf(c)), at);
    };
    xs.prologue(stage);
    int c = 0;
    for (int64_t kb = kr.kb0; kb < kr.kb1; ++c) {
        const int blocks = kr.chunk(c, kb);
        asm volatile("cp.async.wait_group 1;");
        __syncthreads();
        xs.next(stage);
        if (active)
            for (int j = 0; j < blocks; j += R)
#pragma unroll
                for (int s = 0; s < R; ++s) {
                    mma_block<NT, TPW>(ring[s], buf(c), rw, (j + s) * int(NativeSparseLayout::kBlockK) / 2, lane, acc);
                    const int64_t next = kb + j + s + R;
                    if (next < kr.kb1)
#pragma unroll
                        for (int t = 0; t < TPW; ++t) load_block<T>(a, tile0 + t, next, lane, ring[s][t]);
                }
        kb += blocks;
    }
    store_acc<NT, TPW, Shape::kThreads, Shape::kRows>(a, acc, tile0, active, n0);
}

// ---- wgmma: BF16 and E4M3, the weight from registers, x from shared memory ----
//
// A warpgroup (4 warps, a tile each: 64 rows) issues wgmma.mma_async.sp with A = its weight
// fragments, which are exactly those of mma.sp for each warp's 16 rows (BF16: m64nNk32, the
// layout above unchanged; E4M3: m64nNk64, native FP8 products), and B = 8 NT tokens of x read by
// the tensor cores from shared memory through a matrix descriptor. x is staged there by cp.async in
// PTX's canonical K-major layout without swizzle: core matrices of 8 tokens x 16 bytes (128
// contiguous bytes), those of a k-step (64 bytes of a token: 4 along k, 128 bytes apart: the
// descriptor's leading byte offset) for each group of 8 tokens (512 bytes apart: its stride byte
// offset). Staging by TMA (one warp issuing the boxes, an mbarrier per buffer) was measured on the
// H200, FP8 gate_up, side by side: in boxes of 16 bytes x the tokens (this layout) 74 us against 45
// at N = 1; in boxes of 128 bytes with the 128-byte swizzle 63 against 45 at N = 1, 66 against 55
// at N = 16, equal at N = 32, and 74 against 85 at N = 64, where cuSPARSELt is faster than both.

constexpr int kWgmmaThreads = 512;  // 4 warpgroups of 64 rows: kRowsPerCta

__device__ __forceinline__ int core_matrix_offset(int nt_tiles, int r, int c) {  // token r, 16-byte segment c of the chunk
    return ((c / 4 * nt_tiles + r / 8) * 4 + c % 4) * 128 + (r % 8) * 16;
}

__device__ __forceinline__ uint64_t x_descriptor(uint32_t smem_addr) {
    return uint64_t((smem_addr & 0x3ffff) >> 4) | uint64_t(128 >> 4) << 16 | uint64_t(512 >> 4) << 32;
}

// Blocks in a warp's register ring (a divisor of the 4 blocks of a k unit). Twice as deep (FP8 up
// to 32 tokens, within the 128 registers a thread) was measured slower on the H200: FP8 gate_up at
// N = 1 62 us against 45. So was a ring in shared memory instead, each warp's blocks brought by bulk
// copies (cp.async.bulk, 1280 or 2304 bytes, an mbarrier a slot) and read into two register sets so
// that two blocks' products stay in flight: side by side on the H200, FP8 gate_up 0.062 ms against
// 0.049 at N = 1 and 0.108 against 0.092 at N = 64, BF16 0.093 against 0.084 at N = 1, the same
// with 2, 4 or 8 blocks a warp: the bytes in flight are not what limits this kernel. What grows with
// N is the re-reading of x, once per CTA: CTAs of 128 rows (two an SM, 32 KB x buffers: twice the
// x traffic) took FP8 gate_up from 0.080 to 0.111 ms at N = 64 and left N = 1 unchanged.
template <GemmDType T>
constexpr int kWgmmaStages = T == GemmDType::FP8 ? 4 : 2;
constexpr uint32_t kIdleMeta = 0x44444444u;  // positions (0, 1) in every group: a warp past the last tile

#define SPENSE_D4(i) "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])
#define SPENSE_WGMMA_SP(N, DLIST, TAIL, ...)                                                                                       \
    do {                                                                                                                            \
        if constexpr (T == GemmDType::BF16)                                                                                         \
            asm volatile("wgmma.mma_async.sp.sync.aligned.m64n" #N "k32.f32.bf16.bf16 " DLIST ", " TAIL ", 1, 1, 1, 0;"             \
                         : __VA_ARGS__                                                                                              \
                         : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "l"(desc), "r"(meta), "n"(SEL));                                \
        else                                                                                                                        \
            asm volatile("wgmma.mma_async.sp.sync.aligned.m64n" #N "k64.f32.e4m3.e4m3 " DLIST ", " TAIL ", 1, 1, 1;"                \
                         : __VA_ARGS__                                                                                              \
                         : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "l"(desc), "r"(meta), "n"(SEL));                                \
    } while (0)

// d += A B for one k-step: A = this warp's 16 rows (a), the warpgroup's 64; B = 8 NT tokens at desc.
// SEL: which lanes of each quad hold the metadata (BF16: 0 for lanes 0, 1 and 1 for lanes 2, 3).
// The immediates after it: scale-d 1 (accumulate into d), A and B not negated, B (BF16) K-major.
template <GemmDType T, int NT, int SEL>
__device__ __forceinline__ void wgmma_sp(float (&d)[NT][4], const uint4& a, uint64_t desc, uint32_t meta) {
    if constexpr (NT == 1)
        SPENSE_WGMMA_SP(8, "{%0, %1, %2, %3}", "{%4, %5, %6, %7}, %8, %9, %10", SPENSE_D4(0));
    else if constexpr (NT == 2)
        SPENSE_WGMMA_SP(16, "{%0, %1, %2, %3, %4, %5, %6, %7}", "{%8, %9, %10, %11}, %12, %13, %14", SPENSE_D4(0), SPENSE_D4(1));
    else if constexpr (NT == 4)
        SPENSE_WGMMA_SP(32, "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}",
                        "{%16, %17, %18, %19}, %20, %21, %22", SPENSE_D4(0), SPENSE_D4(1), SPENSE_D4(2), SPENSE_D4(3));
    else
        SPENSE_WGMMA_SP(64,
                        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, "
                        "%23, %24, %25, %26, %27, %28, %29, %30, %31}",
                        "{%32, %33, %34, %35}, %36, %37, %38", SPENSE_D4(0), SPENSE_D4(1), SPENSE_D4(2), SPENSE_D4(3), SPENSE_D4(4),
                        SPENSE_D4(5), SPENSE_D4(6), SPENSE_D4(7));
}
#undef SPENSE_WGMMA_SP
#undef SPENSE_D4

// Keeps the compiler from moving accesses of the accumulators across the asynchronous products.
template <int NT>
__device__ __forceinline__ void fence_acc(float (&d)[NT][4]) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) asm volatile("" : "+f"(d[nt][i])::"memory");
}

// The matrix descriptor of x for k-step j (64 bytes of each token) of a chunk staged at `base`:
//   Layout::CoreMatrices (cp.async): core matrices of 8 tokens x 16 bytes, 8 NT tokens x 64 bytes
//     a k-step (x_descriptor);
//   Layout::Swizzle128 (TMA): slabs of 8 NT tokens x 128 bytes (two k-steps), rows 128 bytes apart,
//     the 16-byte units of token r XOR-permuted by r % 8; the descriptor's 128-byte swizzle mode
//     undoes it, the 8-token groups 1024 bytes apart (stride byte offset), the leading byte offset
//     unused (1) for a swizzled K-major operand; the second k-step of a slab starts 64 bytes in.
enum class XLayout { CoreMatrices, Swizzle128 };
template <XLayout L, int NT>
__device__ __forceinline__ uint64_t x_step_descriptor(uint32_t base, int j) {
    if constexpr (L == XLayout::CoreMatrices) return x_descriptor(base + uint32_t(j * NT * 512));
    const uint32_t addr = base + uint32_t(j / 2 * NT * 8 * 128 + j % 2 * 64);
    return uint64_t((addr & 0x3ffff) >> 4) | uint64_t(1) << 16 | uint64_t(1024 >> 4) << 32 | uint64_t(1) << 62;
}

// Issues the products of one weight block, its k-steps from k-step `step0` of the staged chunk at
// `base`, as one commit group.
template <GemmDType T, int NT, XLayout L>
__device__ __forceinline__ void wgmma_block(const Frag<T>& f, uint32_t base, int step0, float (&d)[NT][4]) {
    fence_acc<NT>(d);
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#pragma unroll
    for (int s = 0; s < Traits<T>::kSteps; ++s) {
        const uint64_t desc = x_step_descriptor<L, NT>(base, step0 + s);
        const uint32_t meta = s % 2 ? f.meta.y : f.meta.x;
        if (T == GemmDType::BF16 && s >= 2)
            wgmma_sp<T, NT, 1>(d, f.v[s], desc, meta);
        else
            wgmma_sp<T, NT, 0>(d, f.v[s], desc, meta);
    }
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
    fence_acc<NT>(d);
}

// Waits for every product issued, so that their A registers may be reloaded.
template <int NT>
__device__ __forceinline__ void wgmma_wait_all(float (&d)[NT][4]) {
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    fence_acc<NT>(d);
}

// A warp's register ring at the start of its k range: blocks kb0 .. kb0 + R - 1 in ring[0 .. R - 1];
// a warp past the last tile holds zeros, since the warpgroup's products need every warp.
template <GemmDType T, int R>
__device__ __forceinline__ void fill_ring(const KernelArgs& a, int64_t tile, int64_t kb0, int lane, bool active, Frag<T> (&ring)[R]) {
#pragma unroll
    for (int s = 0; s < R; ++s)
        if (active) {
            load_block<T>(a, tile, kb0 + s, lane, ring[s]);
        } else {
#pragma unroll
            for (int v = 0; v < Traits<T>::kVecs; ++v) ring[s].v[v] = make_uint4(0, 0, 0, 0);
            ring[s].meta = make_uint2(kIdleMeta, kIdleMeta);
        }
}

// The products of a chunk of `blocks` blocks from kb, x staged at `base`: block kb + j + s is in
// ring[s]; once its products are done, its registers take the block R after it (up to kb1).
// (Reloading the block before instead, while this one's products run, was measured slower on the
// H200: 12% at N = 1 for this kernel, and for the cluster kernel BF16 gate_up at N = 64 0.099 ->
// 0.113 ms, FP8 0.063 -> 0.073: results/gemm-h200-cluster-x.md.)
template <GemmDType T, int NT, XLayout L, int R>
__device__ __forceinline__ void chunk_products(const KernelArgs& a, int64_t tile, int lane, bool active, int64_t kb, int blocks,
                                               int64_t kb1, uint32_t base, Frag<T> (&ring)[R], float (&acc)[NT][4]) {
    for (int j = 0; j < blocks; j += R)
#pragma unroll
        for (int s = 0; s < R; ++s) {
            wgmma_block<T, NT, L>(ring[s], base, (j + s) * Traits<T>::kSteps, acc);
            wgmma_wait_all(acc);
            const int64_t next = kb + j + s + R;
            if (active && next < kb1) load_block<T>(a, tile, next, lane, ring[s]);
        }
}

// A warp's whole k range, for both wgmma kernels: its register ring, begin() (waits for the
// predecessor and stages the first chunks of x), then chunk by chunk ready(c) (the kernel's
// synchronization: chunk c staged, chunk c + 2 issued) and the products on chunk c's buffer at
// base(c).
template <GemmDType T, int NT, XLayout L, int R, class Begin, class Ready, class Base>
__device__ __forceinline__ void wgmma_range(const KernelArgs& a, const KRange& kr, int64_t tile, int lane, bool active, Begin&& begin,
                                            Ready&& ready, Base&& base, float (&acc)[NT][4]) {
    Frag<T> ring[R];
    fill_ring<T, R>(a, tile, kr.kb0, lane, active, ring);
    begin();
    int c = 0;
    for (int64_t kb = kr.kb0; kb < kr.kb1; ++c) {
        const int blocks = kr.chunk(c, kb);
        ready(c);
        chunk_products<T, NT, L, R>(a, tile, lane, active, kb, blocks, kr.kb1, base(c), ring, acc);
        kb += blocks;
    }
}

// grid: (256-row groups, splits, token slices of 8 NT). Dynamic shared memory: the kXBuffers x
// buffers (XSchedule) in the core-matrix layout.
template <GemmDType T, int NT>
__global__ void __launch_bounds__(kWgmmaThreads, 1) wgmma_kernel(KernelArgs a) {
    constexpr int R = kWgmmaStages<T>, ROWS = NT * 8, E = T == GemmDType::BF16 ? 2 : 1;
    extern __shared__ uint4 smem_raw[];
    const int buffer_bytes = ROWS * a.chunk_blocks * int(NativeSparseLayout::kBlockK) * E;
    const auto buf = [&](int c) { return reinterpret_cast<uint8_t*>(smem_raw) + (c % kXBuffers) * buffer_bytes; };

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t tile = int64_t(blockIdx.x) * (kRowsPerCta / 16) + warp;
    const bool active = tile < a.tiles;
    const int64_t n0 = int64_t(blockIdx.z) * ROWS;
    const KRange kr(a);
    const auto at = [](int r, int c) { return core_matrix_offset(NT, r, c); };
    XSchedule xs(kr);
    const auto stage = [&](int c, int64_t kb, int blocks) { stage_x<E, true>(a, n0, ROWS, kb, blocks, buf(c), at); };
    const auto begin = [&] {
        wait_for_predecessor();
        xs.prologue(stage);
    };

    float acc[1][NT][4] = {};
    const auto ready = [&](int) {
        asm volatile("cp.async.wait_group 1;");
        // x, written through the generic proxy, is read by the tensor cores through the async proxy.
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        __syncthreads();
        xs.next(stage);
    };
    const auto base = [&](int c) { return smem_u32(buf(c)); };
    wgmma_range<T, NT, XLayout::CoreMatrices, R>(a, kr, tile, lane, active, begin, ready, base, acc[0]);
    store_acc<NT, 1, kWgmmaThreads, kRowsPerCta>(a, acc, tile, active, n0);
}

// ---- wgmma with x brought by TMA, read once from L2 for a cluster of two CTAs ----
//
// Why: from 32 tokens on, the re-reading of x by every CTA (once per 256 rows: 65 MB against a
// 164 MB weight for FP8 gate_up at N = 64) costs about as much as it would take at 2 TB/s, in the
// memory pipeline the weight stream needs (bench/README.md). Here the two CTAs of a cluster, on
// neighbouring row groups with the same k range and tokens, split each chunk's TMA boxes, each box
// multicast into both CTAs' shared memory: x leaves L2 once per 512 rows, and no thread spends
// instructions on staging it. The weight stream and the products are the wgmma kernel's.
// Synchronization, per buffer and CTA: a full mbarrier, armed by the CTA's thread 0 for the whole
// chunk's bytes, which the boxes of both CTAs complete; a buffer is refilled after a cluster
// barrier at the start of each chunk, which every thread of both CTAs reaches once its products on
// the previous chunk (the buffer's last use) are done. That barrier's arrive is relaxed: with a
// release arrive, 31% of the stall samples were at it (results/ncu-stalls-cluster-fp8-h200.md),
// and relaxing it made the kernel 8-16% faster from 32 tokens on
// (results/gemm-h200-cluster-relaxed.md). Empty mbarriers instead, which every warp of both CTAs
// arrives on and only thread 0 waits for before issuing, were measured with it and were no
// faster. (Clusters of 4, x leaving L2 once per 1024 rows, were measured on the H200 in turn with
// these and were no faster: BF16 gate_up at N = 64 0.0990 / 0.0997 ms against 0.0987 / 0.0977,
// down 0.0648 / 0.0651 against 0.0632 / 0.0639.)

constexpr int kClusterCtas = 2;
// Its register ring: with no registers spent on staging x, BF16 up to 32 tokens holds 4 blocks
// (114 registers a thread at 32): on the H200, in turn with 2, BF16 gate_up at N = 32 0.0876 /
// 0.0878 ms against 0.0918 / 0.0926 (down unchanged). At 64 tokens 4 spill (24 bytes) and, in
// turn with 2, were slower: gate_up 0.0968 / 0.0967 ms against 0.0858 / 0.0851, down 0.0624 /
// 0.0618 against 0.0554 / 0.0561. FP8 holds 4; a ring of 8 (whole chunks of 8 blocks, no spills
// up to 32 tokens) was no faster in turn: gate_up at N = 16 0.0484 / 0.0486 ms against 0.0481 /
// 0.0490, at N = 32 0.0492 / 0.0491 against 0.0485 / 0.0492.
template <GemmDType T, int NT>
constexpr int kWgmmaTmaStages = T == GemmDType::BF16 && NT <= 4 ? 4 : kWgmmaStages<T>;

// grid: (256-row groups rounded up to whole clusters, splits, token slices of 8 NT); xmap: x as a
// [n, k] tensor, boxes of 128 bytes of k by 8 NT tokens, 128-byte swizzle, zeros outside.
// Dynamic shared memory: kXBuffers buffers (XSchedule's order) and 1 KB to align them to the swizzle's 1024 bytes.
template <GemmDType T, int NT>
__global__ void __cluster_dims__(kClusterCtas, 1, 1) __launch_bounds__(kWgmmaThreads, 1)
    wgmma_tma_kernel(const __grid_constant__ CUtensorMap xmap, KernelArgs a) {
    constexpr int R = kWgmmaTmaStages<T, NT>, ROWS = NT * 8, E = T == GemmDType::BF16 ? 2 : 1, kSlabBytes = ROWS * 128;
    extern __shared__ uint4 smem_raw[];
    __shared__ uint64_t full[kXBuffers];
    const uint32_t smem0 = (smem_u32(smem_raw) + 1023) & ~1023u;
    const uint32_t buffer_bytes = uint32_t(a.chunk_blocks * E * kSlabBytes);
    const auto buf = [&](int c) { return smem0 + uint32_t(c % kXBuffers) * buffer_bytes; };
    const auto bar = [&](int c) { return smem_u32(&full[c % kXBuffers]); };
    uint32_t rank;
    asm("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t tile = int64_t(blockIdx.x) * (kRowsPerCta / 16) + warp;
    const bool active = tile < a.tiles;
    const int n0 = int(blockIdx.z) * ROWS;
    const KRange kr(a);
    if (threadIdx.x == 0) {
        for (int i = 0; i < kXBuffers; ++i) mbarrier_init(bar(i), 1);
        fence_mbarrier_init_cluster();
    }
    cluster_sync();  // both CTAs' barriers exist before either's boxes arrive

    // Chunk c (blocks from kb): this CTA's boxes are its slabs of parity `rank`, into both CTAs.
    const auto stage = [&](int c, int64_t kb, int blocks) {
        if (threadIdx.x != 0 || blocks <= 0) return;
        mbarrier_arrive_expect_tx(bar(c), uint32_t(blocks * E * kSlabBytes));
        for (int slab = int(rank); slab < blocks * E; slab += kClusterCtas) {
            const int col = int(kb * NativeSparseLayout::kBlockK) + slab * (128 / E);
            asm volatile(
                "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
                " [%0], [%1, {%2, %3}], [%4], %5;" ::"r"(buf(c) + uint32_t(slab * kSlabBytes)),
                "l"(&xmap), "r"(col), "r"(n0), "r"(bar(c)), "h"(uint16_t((1u << kClusterCtas) - 1))
                : "memory");
        }
    };
    XSchedule xs(kr);
    const auto begin = [&] {
        wait_for_predecessor();
        xs.prologue(stage);
    };

    float acc[1][NT][4] = {};
    const auto ready = [&](int c) {
        // Both CTAs are done with chunk c - 1, whose buffer takes chunk c + 2. Relaxed: that
        // buffer's last reads (wgmma's) completed at wgmma.wait_group 0, so nothing needs
        // releasing, and a release would wait for the register ring's weight loads in flight.
        cluster_arrive_relaxed();
        cluster_wait();
        xs.next(stage);
        mbarrier_wait(bar(c), uint32_t(c / kXBuffers) & 1u);
    };
    wgmma_range<T, NT, XLayout::Swizzle128, R>(a, kr, tile, lane, active, begin, ready, buf, acc[0]);
    cluster_sync();  // no box of this CTA is still landing in the other's memory when it exits
    store_acc<NT, 1, kWgmmaThreads, kRowsPerCta>(a, acc, tile, active, n0);
}

// x of a launch as a TMA tensor map for wgmma_tma_kernel: [n, k] elements, row stride ldb.
CUtensorMap x_tensor_map(const KernelArgs& a, GemmDType t, int rows) {
    using Encode = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*,
                                const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
    static const Encode encode = [] {
        void* fn = nullptr;
        cudaDriverEntryPointQueryResult found{};
        SPENSE_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found),
                          "looking up cuTensorMapEncodeTiled");
        SPENSE_CHECK(found == cudaDriverEntryPointSuccess && fn, "the CUDA driver has no cuTensorMapEncodeTiled (TMA needs 12.0 or newer)");
        return reinterpret_cast<Encode>(fn);
    }();
    const int64_t e = int64_t(gemm_dtype_bytes(t));
    const cuuint64_t dims[2] = {cuuint64_t(a.k), cuuint64_t(a.n)}, strides[1] = {cuuint64_t(a.ldb * e)};
    const cuuint32_t box[2] = {cuuint32_t(128 / e), cuuint32_t(rows)}, steps[2] = {1, 1};
    CUtensorMap map{};
    const CUresult r = encode(&map, t == GemmDType::BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_UINT8, 2,
                              const_cast<uint8_t*>(a.x), dims, strides, box, steps, CU_TENSOR_MAP_INTERLEAVE_NONE,
                              CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    SPENSE_CHECK(r == CUDA_SUCCESS, "native 2:4 GEMM: TMA map of x [", a.n, ", ", a.k, "] (row stride ", a.ldb, ") failed with CUresult ", int(r));
    return map;
}

// Shared memory of a launch: kXBuffers x buffers of `rows` tokens by `cols` columns (the mma.sync kernel's
// rows padded by 16 bytes against bank conflicts).
size_t smem_bytes(NativeKernel kernel, GemmDType t, int64_t rows, int64_t cols) {
    if (kernel == NativeKernel::MmaSync || kernel == NativeKernel::MmaSyncPairs) return size_t(kXBuffers * rows * (cols * 2 + 16));
    return size_t(kXBuffers * rows * cols * int64_t(gemm_dtype_bytes(t))) + (kernel == NativeKernel::WgmmaCluster ? 1024 : 0);
}

// Columns of x per buffer: as many 512-column units as fit kXBufferBytes, at least one.
int64_t max_chunk_cols(NativeKernel kernel, GemmDType t, int64_t rows) {
    const bool mma_sync = kernel == NativeKernel::MmaSync || kernel == NativeKernel::MmaSyncPairs;
    const int64_t unit = rows * 512 * (mma_sync ? 2 : int64_t(gemm_dtype_bytes(t)));
    return 512 * std::max<int64_t>(kXBufferBytes / unit, 1);
}

// With programmatic dependent launch (launch.h): each kernel loads its register ring of weight
// blocks, which no kernel before it writes, then waits for its predecessor before it reads x, y or
// the split-K workspace, so that in the decode step the weight stream starts while the kernel
// before (a norm, SwiGLU) finishes.
template <auto K, class... Params>
cudaError_t launch_kernel(unsigned threads, size_t max_smem, dim3 grid, size_t smem, cudaStream_t stream, const Params&... params) {
    static const bool configured = [&] {
        SPENSE_CUDA_CHECK(cudaFuncSetAttribute(K, cudaFuncAttributeMaxDynamicSharedMemorySize, int(max_smem)),
                          "native 2:4 kernel shared memory");
        return true;
    }();
    (void)configured;
    return launch_pdl(K, LaunchShape{grid, dim3(threads), smem}, stream, params...);
}

template <int NT>
cudaError_t launch_nt(NativeKernel kernel, GemmDType t, const KernelArgs& a, dim3 grid, size_t smem, cudaStream_t stream) {
    constexpr int64_t rows = NT * 8;
    const size_t max_smem = smem_bytes(kernel, t, rows, max_chunk_cols(kernel, t, rows));
    if (kernel == NativeKernel::MmaSync)
        return launch_kernel<mma_sync_kernel<NT, false>>(WarpShape<NT, false>::kThreads, max_smem, grid, smem, stream, a);
    if constexpr (NT <= 2)
        if (kernel == NativeKernel::MmaSyncPairs)
            return launch_kernel<mma_sync_kernel<NT, true>>(WarpShape<NT, true>::kThreads, max_smem, grid, smem, stream, a);
    if (kernel == NativeKernel::WgmmaCluster) {
        const CUtensorMap xmap = x_tensor_map(a, t, int(rows));
        if (t == GemmDType::BF16)
            return launch_kernel<wgmma_tma_kernel<GemmDType::BF16, NT>>(kWgmmaThreads, max_smem, grid, smem, stream, xmap, a);
        return launch_kernel<wgmma_tma_kernel<GemmDType::FP8, NT>>(kWgmmaThreads, max_smem, grid, smem, stream, xmap, a);
    }
    if (t == GemmDType::BF16)
        return launch_kernel<wgmma_kernel<GemmDType::BF16, NT>>(kWgmmaThreads, max_smem, grid, smem, stream, a);
    return launch_kernel<wgmma_kernel<GemmDType::FP8, NT>>(kWgmmaThreads, max_smem, grid, smem, stream, a);
}

int tiles_for_tokens(int64_t n) {  // 8-token tiles per slice: 1, 2, 4 or 8
    int nt = 1;
    while (nt * 8 < n && nt < kMaxNTiles) nt *= 2;
    return nt;
}

}  // namespace

const char* native_kernel_name(NativeKernel kernel) {
    switch (kernel) {
    case NativeKernel::MmaSync: return "mma.sync";
    case NativeKernel::MmaSyncPairs: return "mma.sync pairs";
    case NativeKernel::WgmmaCluster: return "wgmma cluster";
    default: return "wgmma";
    }
}

bool native_kernel_serves(NativeKernel kernel, GemmDType dtype, int64_t n) {
    if (kernel == NativeKernel::Wgmma || kernel == NativeKernel::WgmmaCluster) return true;
    return dtype == GemmDType::BF16 && (kernel == NativeKernel::MmaSync || tiles_for_tokens(n) <= 2);
}

int64_t native_row_ctas(const NativeSparseLayout& layout, NativeKernel kernel) {
    const int64_t rows = kernel == NativeKernel::MmaSyncPairs ? WarpShape<1, true>::kRows : kRowsPerCta;
    const int64_t ctas = (layout.tiles * 16 + rows - 1) / rows;
    return kernel == NativeKernel::WgmmaCluster ? round_up(ctas, kClusterCtas) : ctas;
}

NativeSparseLayout NativeSparseLayout::make(GemmDType dtype, int64_t m, int64_t k) {
    SPENSE_CHECK(m > 0 && k > 0, "native 2:4 layout of an empty weight [", m, ", ", k, "]");
    NativeSparseLayout l;
    l.dtype = dtype;
    l.m = m;
    l.k = k;
    l.tiles = round_up(m, kRowGranule) / kTileRows;
    l.k_blocks = round_up(k, kKGranule) / kBlockK;
    return l;
}

std::vector<uint8_t> encode_native_2to4_host(const NativeSparseLayout& layout, const void* w) {
    std::vector<uint8_t> out(layout.bytes());
    const Source s{static_cast<const uint8_t*>(w), layout.m, layout.k, int(gemm_dtype_bytes(layout.dtype))};
    for (int64_t t = 0; t < layout.tiles; ++t)
        for (int64_t b = 0; b < layout.k_blocks; ++b)
            for (int lane = 0; lane < 32; ++lane)
                if (!encode_lane(s, layout, t, b, lane, out.data()))
                    fail("native 2:4 layout: the weight [", layout.m, ", ", layout.k, "] has a group of 4 with more than 2 non-zeros in rows ",
                         t * 16, "..", t * 16 + 15, ", columns ", b * NativeSparseLayout::kBlockK, "..",
                         (b + 1) * NativeSparseLayout::kBlockK - 1);
    return out;
}

size_t NativeSparseLayout::workspace_floats(int64_t n) const {
    return size_t(slices(n) * tiles * 16 * tiles_for_tokens(n) * 8);
}

void launch_native_2to4_convert(const NativeSparseLayout& layout, const void* pruned, void* out, unsigned* bad, cudaStream_t stream) {
    const Source src{static_cast<const uint8_t*>(pruned), layout.m, layout.k, int(gemm_dtype_bytes(layout.dtype))};
    const int64_t threads = layout.tiles * layout.k_blocks * 32;
    SPENSE_CUDA_CHECK(cudaMemsetAsync(bad, 0, sizeof(unsigned), stream));
    convert_kernel<<<unsigned((threads + 255) / 256), 256, 0, stream>>>(src, layout, static_cast<uint8_t*>(out), bad);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "native 2:4 conversion of a [", layout.m, ", ", layout.k, "] ", gemm_dtype_name(layout.dtype),
                      " weight");
}

void launch_native_2to4_gemm(const NativeGemmArgs& g, cudaStream_t stream) {
    const NativeSparseLayout& L = g.layout;
    const int64_t e = int64_t(gemm_dtype_bytes(L.dtype));
    const auto where = [&] {
        return cat(gemm_dtype_name(L.dtype), " [", L.m, ", ", L.k, "] n=", g.n, " ldb=", g.ldb, " ldc=", g.ldc, " splits=", g.splits,
                   g.k_parts ? " apart" : "");
    };
    SPENSE_CHECK(g.n >= 1 && g.ldb >= L.k && g.ldc >= L.m, "native 2:4 GEMM: bad sizes, ", where());
    SPENSE_CHECK(reinterpret_cast<uintptr_t>(g.x) % 16 == 0 && (g.ldb * e) % 16 == 0,
                 "native 2:4 GEMM: x must be 16-byte aligned with rows of a multiple of 16 bytes, ", where());
    SPENSE_CHECK(g.splits >= 1 && g.splits <= L.k_units(), "native 2:4 GEMM: split count out of 1..", L.k_units(), ", ", where());
    SPENSE_CHECK(g.splits == 1 || g.k_parts || (g.workspace && g.counters), "native 2:4 GEMM: split-K without a workspace, ", where());
    SPENSE_CHECK(!g.k_parts || !g.accumulate, "native 2:4 GEMM: k in parts cannot accumulate into y, ", where());
    SPENSE_CHECK(native_kernel_serves(g.kernel, L.dtype, g.n), "native 2:4 GEMM: the ", native_kernel_name(g.kernel),
                 " kernel does not serve this case (mma.sync: BF16 only; pairs: up to 16 tokens), ", where());
    const int nt = tiles_for_tokens(g.n);
    KernelArgs a{};
    a.w = static_cast<const uint8_t*>(g.w);
    a.x = static_cast<const uint8_t*>(g.x);
    a.y = g.y;
    a.f32_out = g.out == GemmOut::F32;
    a.out_scale = g.out_scale;
    a.workspace = g.workspace;
    a.counters = g.counters;
    a.m = L.m;
    a.k = L.k;
    a.ldb = g.ldb;
    a.ldc = g.ldc;
    a.n = g.n;
    a.tiles = L.tiles;
    a.k_blocks = L.k_blocks;
    a.splits = g.splits;
    a.part_elems = g.k_parts ? g.n * g.ldc : 0;
    a.accumulate = g.accumulate;
    const int64_t rows = int64_t(nt) * 8, cols = max_chunk_cols(g.kernel, L.dtype, rows);
    a.chunk_blocks = int(cols / NativeSparseLayout::kBlockK);
    const size_t smem = smem_bytes(g.kernel, L.dtype, rows, cols);
    const dim3 grid(unsigned(native_row_ctas(L, g.kernel)), unsigned(g.splits), unsigned(NativeSparseLayout::slices(g.n)));
    cudaError_t launched;
    switch (nt) {
    case 1: launched = launch_nt<1>(g.kernel, L.dtype, a, grid, smem, stream); break;
    case 2: launched = launch_nt<2>(g.kernel, L.dtype, a, grid, smem, stream); break;
    case 4: launched = launch_nt<4>(g.kernel, L.dtype, a, grid, smem, stream); break;
    default: launched = launch_nt<8>(g.kernel, L.dtype, a, grid, smem, stream); break;
    }
    SPENSE_CUDA_CHECK(launched, "native 2:4 GEMM ", where());
}

}  // namespace spense::gpu
