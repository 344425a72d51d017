// The native 2:4 GEMM kernel and its layout conversion (native_sparse_kernels.h).
#include "gpu/native_sparse_kernels.h"

#include <cuda_fp8.h>

#include <algorithm>

#include "core/error.h"
#include "gpu/check.h"

namespace spense::gpu {

namespace {

constexpr int kRowsPerCta = 256;  // 16 tiles
// The warps of a CTA for NT 8-token tiles. Up to 16 tokens, 16 warps of one tile, which keep more
// weight loads in flight; from 32 tokens on, 8 warps of two tiles, so that each x fragment read
// from shared memory feeds two products. Measured on the H200 (BF16 speedup over dense, gate_up):
// N = 1 1.61x (two tiles) -> 1.68x (one tile), N = 8 1.54x -> 1.61x, N = 16 equal; N = 32 1.31x
// (two tiles) against 1.23x (one tile), N = 64 0.95x against 0.75x.
template <int NT>
struct WarpShape {
    static constexpr int kTilesPerWarp = NT <= 2 ? 1 : 2;
    static constexpr int kWarps = 16 / kTilesPerWarp, kThreads = kWarps * 32;
};
constexpr int64_t kXBufferBytes = 64 << 10;               // x staged per chunk (at least 512 columns)
constexpr int kMaxNTiles = int(NativeSparseLayout::kMaxTokensPerSlice / 8);

int64_t round_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }
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

// One lane's part of (tile, block): for each of the block's 4 k-steps of 32 columns, its four A
// registers r (row g + 8 (r & 1), group q + 4 (r >> 1) of the k-step), and its two metadata words.
SPENSE_HOST_DEVICE bool encode_lane(const Source& s, const NativeSparseLayout& L, int64_t tile, int64_t block, int lane, uint8_t* base) {
    const bool bf16 = L.dtype == GemmDType::BF16;
    const int g = lane / 4, q = lane % 4;
    uint8_t* blk = base + (tile * L.k_blocks + block) * L.block_bytes();
    const int64_t col0 = block * NativeSparseLayout::kBlockK;
    for (int st = 0; st < 4; ++st)
        for (int r = 0; r < 4; ++r) {
            Group grp;
            if (!encode_group(s, tile * 16 + g + 8 * (r & 1), col0 + 32 * st + 4 * (q + 4 * (r >> 1)), &grp)) return false;
            if (bf16) {
                uint8_t* p = blk + st * 512 + lane * 16 + r * 4;
                for (int i = 0; i < 4; ++i) p[i] = uint8_t(grp.values >> (8 * i));
            } else {
                uint8_t* p = blk + (st / 2) * 512 + lane * 16 + (st % 2) * 8 + r * 2;
                p[0] = uint8_t(grp.values);
                p[1] = uint8_t(grp.values >> 8);
            }
        }
    // Metadata: lanes q < 2 hold k-steps 0, 1 of role q; lanes q >= 2 k-steps 2, 3 of role q - 2.
    uint8_t* meta = blk + L.block_bytes() - 256 + lane * 8;
    const int role = q % 2;
    for (int i = 0; i < 2; ++i) {
        const int st = q < 2 ? i : 2 + i;
        uint32_t w = 0;
        for (int half = 0; half < 2; ++half)
            for (int c = 0; c < 4; ++c) {
                Group grp;
                if (!encode_group(s, tile * 16 + g + 8 * half, col0 + 32 * st + 4 * (4 * role + c), &grp)) return false;
                w |= grp.meta << (16 * half + 4 * c);
            }
        for (int j = 0; j < 4; ++j) meta[4 * i + j] = uint8_t(w >> (8 * j));
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

// ---- the GEMM kernel ----

// BF16 weights feed the BF16 product directly. E4M3 weights are widened to F16 in registers (exact:
// every E4M3 value is an F16 value) for the F16 product, because sm_90 has no native FP8 mma.sync
// (ptxas emulates it, at twice the registers); x is widened once, when staged.
template <GemmDType T>
struct Traits;
template <>
struct Traits<GemmDType::BF16> {
    static constexpr int kVecs = 4, kStages = 2;  // uint4 of values per lane and block; register ring depth
};
template <>
struct Traits<GemmDType::FP8> {
    static constexpr int kVecs = 2, kStages = 4;
};
// (Twice these stages for warps of one tile, at the same registers a thread, were measured on the
// H200 and were no faster: the stalls at N = 1 are not for want of loads in flight.)

template <GemmDType T>
struct Frag {
    uint4 v[Traits<T>::kVecs];
    uint2 meta;
};

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

__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t two) {
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(two), __NV_E4M3);
    return uint32_t(h.x) | uint32_t(h.y) << 16;
}

// d += A B for one k-step of 32 columns: a = the 4 A registers, b = the 4 B registers (2 elements each).
template <GemmDType T>
__device__ __forceinline__ void mma_sp(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[4], uint32_t meta) {
    if constexpr (T == GemmDType::BF16)
        asm volatile("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 "
                     "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(meta));
    else
        asm volatile("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 "
                     "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(meta));
}

struct KernelArgs {
    const uint8_t* w;
    const uint8_t* x;
    bf16* y;
    const float* out_scale;
    float* workspace;
    unsigned* counters;
    int64_t m, k, ldb, ldc, n;
    int64_t tiles, k_blocks;
    int splits;
    int chunk_blocks;  // k-blocks of x per shared-memory buffer (a multiple of 4)
    bool accumulate;
};

// cp.async of x rows [n0, n0 + rows) x columns [block0 * 128, + blocks * 128) (E bytes an element)
// into dst (row stride `stride` bytes), zero past n and k; one commit group.
template <int E>
__device__ void stage_x(const KernelArgs& a, int64_t n0, int rows, int64_t block0, int blocks, uint8_t* dst, int stride) {
    const int segs = blocks * int(NativeSparseLayout::kBlockK) * E / 16;  // 16-byte segments per row
    for (int i = threadIdx.x; i < rows * segs; i += blockDim.x) {
        const int r = i / segs, c = i % segs;
        const int64_t col = block0 * NativeSparseLayout::kBlockK + int64_t(c) * (16 / E);
        const int64_t row = n0 + r;
        int bytes = 0;
        const uint8_t* src = a.x;
        if (row < a.n && col < a.k) {
            bytes = int(imin(16, (a.k - col) * E));
            src = a.x + (row * a.ldb + col) * E;
        }
        const uint32_t d = uint32_t(__cvta_generic_to_shared(dst + r * stride + c * 16));
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(bytes));
    }
    asm volatile("cp.async.commit_group;");
}

// E4M3 x staged raw -> F16 in the compute buffer (16 bytes at a time).
__device__ void widen_x(const uint8_t* raw, int raw_stride, uint32_t* out, int rw, int rows, int cols) {
    const int segs = cols / 16;
    for (int i = threadIdx.x; i < rows * segs; i += blockDim.x) {
        const int r = i / segs, c = i % segs;
        const uint4 v = *reinterpret_cast<const uint4*>(raw + r * raw_stride + c * 16);
        uint4* o = reinterpret_cast<uint4*>(out + r * rw + c * 8);
        o[0] = make_uint4(e4m3x2_to_f16x2(v.x & 0xffff), e4m3x2_to_f16x2(v.x >> 16), e4m3x2_to_f16x2(v.y & 0xffff), e4m3x2_to_f16x2(v.y >> 16));
        o[1] = make_uint4(e4m3x2_to_f16x2(v.z & 0xffff), e4m3x2_to_f16x2(v.z >> 16), e4m3x2_to_f16x2(v.w & 0xffff), e4m3x2_to_f16x2(v.w >> 16));
    }
}

template <GemmDType T>
__device__ __forceinline__ void load_block(const KernelArgs& a, int64_t tile, int64_t block, int lane, Frag<T>& f) {
    constexpr int V = Traits<T>::kVecs;
    const uint8_t* p = a.w + (tile * a.k_blocks + block) * (V * 512 + 256);
#pragma unroll
    for (int s = 0; s < V; ++s) f.v[s] = load_stream16(p + s * 512 + lane * 16);
    f.meta = load_stream8(p + V * 512 + lane * 8);
}

// The A registers of k-step s (0..3) of a block.
template <GemmDType T>
__device__ __forceinline__ void a_regs(const Frag<T>& f, int s, uint32_t (&a)[4]) {
    if constexpr (T == GemmDType::BF16) {
        a[0] = f.v[s].x;
        a[1] = f.v[s].y;
        a[2] = f.v[s].z;
        a[3] = f.v[s].w;
    } else {  // 8 bytes per k-step: registers r = 0..3 as 2 E4M3 each
        const uint4& v = f.v[s / 2];
        const uint32_t lo = s % 2 ? v.z : v.x, hi = s % 2 ? v.w : v.y;
        a[0] = e4m3x2_to_f16x2(lo & 0xffff);
        a[1] = e4m3x2_to_f16x2(lo >> 16);
        a[2] = e4m3x2_to_f16x2(hi & 0xffff);
        a[3] = e4m3x2_to_f16x2(hi >> 16);
    }
}

// The products of one weight block (the TPW tiles of the warp) with the staged x (16-bit elements,
// row stride rw words); `col_word` is the block's first word within an x row.
template <GemmDType T, int NT, int TPW>
__device__ __forceinline__ void compute_block(const Frag<T> (&f)[TPW], const uint32_t* buf, int rw, int col_word, int lane,
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
    const uint32_t base = uint32_t(__cvta_generic_to_shared(buf + (lane % 8) * rw + col_word + 4 * (lane / 8)));
#pragma unroll
    for (int s = 0; s < 4; ++s) {
        uint32_t b[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
            asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                         : "=r"(b[nt][0]), "=r"(b[nt][1]), "=r"(b[nt][2]), "=r"(b[nt][3])
                         : "r"(base + 4 * ((nt * 8) * rw + s * 16)));
#pragma unroll
        for (int t = 0; t < TPW; ++t) {
            uint32_t a[4];
            a_regs<T>(f[t], s, a);
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) mma_sp<T>(acc[t][nt], a, b[nt], meta[t][s]);
        }
    }
}

__device__ __forceinline__ void write_out(const KernelArgs& a, int64_t row, int64_t j, float v) {
    if (row >= a.n || j >= a.m) return;
    bf16* p = a.y + row * a.ldc + j;
    if (a.accumulate) v += __bfloat162float(*p);
    if (a.out_scale) v *= a.out_scale[j];
    *p = __float2bfloat16(v);
}

// grid: (256-row groups, splits, token slices of 8 NT). Dynamic shared memory: BF16 two x buffers
// (double-buffered cp.async); FP8 one raw E4M3 buffer (cp.async) and one F16 buffer.
template <GemmDType T, int NT>
__global__ void __launch_bounds__(WarpShape<NT>::kThreads, 1) native_sparse_kernel(KernelArgs a) {
    using Tr = Traits<T>;
    constexpr int TPW = WarpShape<NT>::kTilesPerWarp;
    constexpr int R = Tr::kStages, ROWS = NT * 8;
    extern __shared__ uint4 smem_raw[];
    const int chunk_cols = a.chunk_blocks * int(NativeSparseLayout::kBlockK);
    const int rw = chunk_cols / 2 + 4;  // words; == 4 mod 32, so the B reads hit 32 distinct banks
    uint32_t* buf0 = reinterpret_cast<uint32_t*>(smem_raw);
    uint32_t* buf1 = buf0 + ROWS * rw;  // BF16: second buffer; FP8: raw E4M3 (row stride chunk_cols + 16 bytes)
    const int raw_stride = chunk_cols + 16;

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t tile0 = int64_t(blockIdx.x) * (kRowsPerCta / 16) + warp * TPW;
    const bool active = tile0 < a.tiles;  // tiles come in pairs (m padded to 32)
    const int64_t n0 = int64_t(blockIdx.z) * ROWS;
    // This CTA's k-blocks, in whole units of 4 blocks (512 columns).
    const int64_t units = a.k_blocks / 4;
    const int64_t kb0 = units * blockIdx.y / a.splits * 4, kb1 = units * (blockIdx.y + 1) / a.splits * 4;

    float acc[TPW][NT][4] = {};
    Frag<T> ring[R][TPW];
    if (active)
#pragma unroll
        for (int s = 0; s < R; ++s)
#pragma unroll
            for (int t = 0; t < TPW; ++t) load_block<T>(a, tile0 + t, kb0 + s, lane, ring[s][t]);

    // The first chunk is one unit, so that the products start as soon as 512 columns of x have landed
    // (H200, two runs side by side: 1-3% at N <= 16, e.g. BF16 gate_up at N = 1 75.6 -> 74.7 us).
    const auto chunk = [&](int c, int64_t kb) { return int(imin(c == 0 ? 4 : a.chunk_blocks, kb1 - kb)); };
    const int first = chunk(0, kb0);
    if constexpr (T == GemmDType::BF16)
        stage_x<2>(a, n0, ROWS, kb0, first, reinterpret_cast<uint8_t*>(buf0), rw * 4);
    else
        stage_x<1>(a, n0, ROWS, kb0, first, reinterpret_cast<uint8_t*>(buf1), raw_stride);
    int c = 0;
    for (int64_t kb = kb0; kb < kb1; ++c) {
        const int blocks = chunk(c, kb);
        const int next_blocks = chunk(c + 1, kb + blocks);
        const uint32_t* x;
        if constexpr (T == GemmDType::BF16) {
            if (next_blocks > 0)
                stage_x<2>(a, n0, ROWS, kb + blocks, next_blocks, reinterpret_cast<uint8_t*>(c & 1 ? buf0 : buf1), rw * 4);
            else
                asm volatile("cp.async.commit_group;");
            asm volatile("cp.async.wait_group 1;");
            __syncthreads();
            x = c & 1 ? buf1 : buf0;
        } else {
            asm volatile("cp.async.wait_group 0;");
            __syncthreads();  // the raw chunk has landed, and every warp is done with the F16 buffer
            widen_x(reinterpret_cast<const uint8_t*>(buf1), raw_stride, buf0, rw, ROWS, blocks * int(NativeSparseLayout::kBlockK));
            __syncthreads();
            if (next_blocks > 0) stage_x<1>(a, n0, ROWS, kb + blocks, next_blocks, reinterpret_cast<uint8_t*>(buf1), raw_stride);
            x = buf0;
        }
        if (active)
            for (int j = 0; j < blocks; j += R)
#pragma unroll
                for (int s = 0; s < R; ++s) {
                    compute_block<T, NT, TPW>(ring[s], x, rw, (j + s) * int(NativeSparseLayout::kBlockK) / 2, lane, acc);
                    const int64_t next = kb + j + s + R;
                    if (next < kb1)
#pragma unroll
                        for (int t = 0; t < TPW; ++t) load_block<T>(a, tile0 + t, next, lane, ring[s][t]);
                }
        if constexpr (T == GemmDType::BF16) __syncthreads();
        kb += blocks;
    }

    // Accumulator fragment: acc[t][nt][0..1] = D[row g][tokens 2q, 2q + 1], [2..3] the same of row g + 8.
    const int g = lane / 4, q = lane % 4;
    if (a.splits == 1) {
        if (!active) return;
#pragma unroll
        for (int t = 0; t < TPW; ++t)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                const int64_t j = (tile0 + t) * 16 + g, r = n0 + nt * 8 + 2 * q;
                write_out(a, r, j, acc[t][nt][0]);
                write_out(a, r + 1, j, acc[t][nt][1]);
                write_out(a, r, j + 8, acc[t][nt][2]);
                write_out(a, r + 1, j + 8, acc[t][nt][3]);
            }
        return;
    }

    // Split-K: workspace [slice][tiles * 16 rows][8 NT tokens] of partial sums.
    constexpr int width = NT * 8;
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
    __threadfence();
    __syncthreads();
    __shared__ bool last;
    unsigned* counter = a.counters + int64_t(blockIdx.z) * gridDim.x + blockIdx.x;
    if (threadIdx.x == 0) last = atomicAdd(counter, 1u) == unsigned(a.splits - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
    // The last CTA of this row group: y from the sums, and the workspace back to zero.
    const int64_t j0 = int64_t(blockIdx.x) * kRowsPerCta, rows = imin(kRowsPerCta, a.m - j0);
    for (int64_t i = threadIdx.x; i < rows * width; i += blockDim.x) {
        const int64_t r = i / rows, j = j0 + i % rows;  // consecutive threads: consecutive outputs of one token
        float* p = ws + j * width + r;
        write_out(a, n0 + r, j, __ldcg(p));
        __stcg(p, 0.0f);
    }
    if (threadIdx.x == 0) *counter = 0;
}

template <GemmDType T, int NT>
void launch(const KernelArgs& a, dim3 grid, size_t smem, cudaStream_t stream) {
    static const bool configured = [] {
        SPENSE_CUDA_CHECK(cudaFuncSetAttribute(native_sparse_kernel<T, NT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               int(2 * (NT * 8) * (std::max<int64_t>(kXBufferBytes / (NT * 8), 1024) + 16))),
                          "native 2:4 kernel shared memory");
        return true;
    }();
    (void)configured;
    native_sparse_kernel<T, NT><<<grid, WarpShape<NT>::kThreads, smem, stream>>>(a);
}

template <GemmDType T>
void launch_nt(int nt, const KernelArgs& a, dim3 grid, size_t smem, cudaStream_t stream) {
    switch (nt) {
    case 1: return launch<T, 1>(a, grid, smem, stream);
    case 2: return launch<T, 2>(a, grid, smem, stream);
    case 4: return launch<T, 4>(a, grid, smem, stream);
    default: return launch<T, 8>(a, grid, smem, stream);
    }
}

int tiles_for_tokens(int64_t n) {  // 8-token tiles per slice: 1, 2, 4 or 8
    int nt = 1;
    while (nt * 8 < n && nt < kMaxNTiles) nt *= 2;
    return nt;
}

}  // namespace

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
        return cat(gemm_dtype_name(L.dtype), " [", L.m, ", ", L.k, "] n=", g.n, " ldb=", g.ldb, " ldc=", g.ldc, " splits=", g.splits);
    };
    SPENSE_CHECK(g.n >= 1 && g.ldb >= L.k && g.ldc >= L.m, "native 2:4 GEMM: bad sizes, ", where());
    SPENSE_CHECK(reinterpret_cast<uintptr_t>(g.x) % 16 == 0 && (g.ldb * e) % 16 == 0,
                 "native 2:4 GEMM: x must be 16-byte aligned with rows of a multiple of 16 bytes, ", where());
    SPENSE_CHECK(g.splits >= 1 && g.splits <= L.k_units(), "native 2:4 GEMM: split count out of 1..", L.k_units(), ", ", where());
    SPENSE_CHECK(g.splits == 1 || (g.workspace && g.counters), "native 2:4 GEMM: split-K without a workspace, ", where());
    const int nt = tiles_for_tokens(g.n);
    KernelArgs a{};
    a.w = static_cast<const uint8_t*>(g.w);
    a.x = static_cast<const uint8_t*>(g.x);
    a.y = g.y;
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
    a.accumulate = g.accumulate;
    // Columns of x per buffer (staged as 16-bit elements): as many 512-column units as fit
    // kXBufferBytes, at least one, at most the CTA's range.
    const int64_t per_unit = int64_t(nt) * 8 * 512 * 2;
    const int64_t cta_units = (L.k_units() + g.splits - 1) / g.splits;
    a.chunk_blocks = int(4 * std::clamp<int64_t>(kXBufferBytes / per_unit, 1, cta_units));
    const int64_t cols = a.chunk_blocks * NativeSparseLayout::kBlockK, rows = int64_t(nt) * 8;
    const int64_t buffer = rows * (cols * 2 + 16);  // one 16-bit buffer
    const size_t smem = size_t(L.dtype == GemmDType::BF16 ? 2 * buffer : buffer + rows * (cols + 16));
    const dim3 grid(unsigned(L.row_groups()), unsigned(g.splits), unsigned(NativeSparseLayout::slices(g.n)));
    if (L.dtype == GemmDType::BF16)
        launch_nt<GemmDType::BF16>(nt, a, grid, smem, stream);
    else
        launch_nt<GemmDType::FP8>(nt, a, grid, smem, stream);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "native 2:4 GEMM ", where());
}

}  // namespace spense::gpu
