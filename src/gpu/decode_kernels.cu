#include "gpu/decode_kernels.h"

#include <cooperative_groups.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <type_traits>

#include "core/error.h"
#include "gpu/check.h"
#include "gpu/cluster.h"
#include "gpu/launch.h"
#include "gpu/mbarrier.h"

namespace spense::gpu {

namespace {

constexpr int kRowThreads = 256;

// The loads behind columns 4 c4 .. 4 c4 + 3 of row r (ld, the columns and the vectors are
// multiples of 4, so every access is aligned), kept apart from their arithmetic (scale4) so that a
// thread issues the loads of all its pieces before it uses any: written as one call, ptxas scaled
// each piece before it issued the next one's loads, a memory latency per piece.
// P: the most parts the kernel reads (ScaledRows::parts), kMaxKParts where it reads the MLP's
// down, 1 elsewhere (registers for all the parts of a thread's pieces would be wasted there).
template <bool F32, int P>
struct Pieces4 {
    using Raw = std::conditional_t<F32, float4, uint2>;
    Raw v[P];
    float4 col_scale, bias;
};
template <bool F32, int P>
__device__ __forceinline__ Pieces4<F32, P> fetch4(const ScaledRows& s, int64_t r, int64_t c4) {
    using Raw = typename Pieces4<F32, P>::Raw;
    const int64_t i = r * (s.ld / 4) + c4;
    Pieces4<F32, P> p{};
#pragma unroll
    for (int k = 0; k < P; ++k)
        if (k < s.parts.count) p.v[k] = reinterpret_cast<const Raw*>(s.raw)[k * (s.parts.stride / 4) + i];
    p.col_scale = s.col_scale ? reinterpret_cast<const float4*>(s.col_scale)[c4] : make_float4(1.0f, 1.0f, 1.0f, 1.0f);
    if (s.bias) p.bias = reinterpret_cast<const float4*>(s.bias)[c4];
    return p;
}
__device__ __forceinline__ float row_factor(const ScaledRows& s, int64_t r) { return s.row_scale ? s.row_scale[r] : 1.0f; }

__device__ __forceinline__ float4 to_float4(float4 v) { return v; }
__device__ __forceinline__ float4 to_float4(uint2 bits) {
    const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&bits.x));
    const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&bits.y));
    return {lo.x, lo.y, hi.x, hi.y};
}

// (the sum of the parts) * row_factor * col_scale + bias, from fetch4's pieces.
template <bool F32, int P>
__device__ __forceinline__ float4 scale4(const ScaledRows& s, const Pieces4<F32, P>& p, float rs) {
    float4 v = to_float4(p.v[0]);
#pragma unroll
    for (int k = 1; k < P; ++k)
        if (k < s.parts.count) {
            const float4 w = to_float4(p.v[k]);
            v = {v.x + w.x, v.y + w.y, v.z + w.z, v.w + w.w};
        }
    const float4 cs = p.col_scale;
    v = {v.x * rs * cs.x, v.y * rs * cs.y, v.z * rs * cs.z, v.w * rs * cs.w};
    if (s.bias) v = {v.x + p.bias.x, v.y + p.bias.y, v.z + p.bias.z, v.w + p.bias.w};
    return v;
}

// The row kernels' reductions: the max of magnitudes (SwiGLU's amax), or a sum and such a max at
// once (the norm's sum of squares and amax: one block and one cluster exchange for the two). T{}
// is neutral for each.
struct MaxOp {
    using T = float;
    __device__ static T apply(T a, T b) { return fmaxf(a, b); }
};
struct SumMaxOp {
    using T = float2;  // (sum, max)
    __device__ static T apply(T a, T b) { return {a.x + b.x, fmaxf(a.y, b.y)}; }
};

__device__ __forceinline__ float shfl_xor(float v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }
__device__ __forceinline__ float2 shfl_xor(float2 v, int o) { return {shfl_xor(v.x, o), shfl_xor(v.y, o)}; }

// Op over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
template <class Op>
__device__ typename Op::T block_reduce(typename Op::T v) {
    using T = typename Op::T;
    __shared__ T partial[32];
    for (int o = 16; o > 0; o >>= 1) v = Op::apply(v, shfl_xor(v, o));
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    __syncthreads();  // `partial` may still be read by a previous reduction
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < warps ? partial[lane] : T{};
    for (int o = 16; o > 0; o >>= 1) v = Op::apply(v, shfl_xor(v, o));
    return v;
}

__device__ __forceinline__ float row_scale_of(float amax) { return amax > 0.0f ? amax / kE4M3Max : 1.0f; }

__device__ __forceinline__ uint8_t to_e4m3(float v) { return __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3); }

// Columns [c0, c1) of padding row r of `out` written as zeros, and its scale as 1 by the CTA that
// holds column 0 (a row past the n tokens: the sparse GEMMs' row granule).
__device__ void zero_columns(const ActOut& out, int64_t r, int64_t c0, int64_t c1) {
    if (out.dtype == GemmDType::FP8) {
        uint8_t* o = static_cast<uint8_t*>(out.data) + r * out.ld;
        for (int64_t c = c0 + threadIdx.x; c < c1; c += blockDim.x) o[c] = 0;
        if (threadIdx.x == 0 && c0 == 0) out.row_scale[r] = 1.0f;
    } else {
        bf16* o = static_cast<bf16*>(out.data) + r * out.ld;
        for (int64_t c = c0 + threadIdx.x; c < c1; c += blockDim.x) o[c] = __float2bfloat16(0.0f);
    }
}

__global__ void embed_kernel(const int32_t* tokens, const bf16* table, float* x, int64_t d) {
    const int64_t r = blockIdx.x;
    const bf16* e = table + int64_t(tokens[r]) * d;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) x[r * d + c] = __bfloat162float(e[c]);
}

// A row split over the CTAs of a thread-block cluster (clusters along x, one cluster per row along
// y): at decode batch sizes one CTA per row leaves most SMs idle and each row's CTA latency-bound,
// so a row's reads spread over up to kMaxCluster SMs and its reductions (the RMS, the quantization
// amax) go through distributed shared memory. CTA `rank` takes units [begin, end) of `count`.
constexpr int kMaxCluster = 8;
// Threads of a CTA of a row cluster, also the kernels' launch bound: without it ptxas kept the
// norm's registers few by issuing the scales' loads only once the products had landed.
constexpr int kMaxRowThreads = 512;
constexpr int64_t kMaxSliceFloats = 12 * 1024;  // a CTA's part of a row: 48 KB of shared memory
namespace cg = cooperative_groups;

struct RowSlice {
    int64_t begin, end;
};
__device__ __forceinline__ RowSlice row_slice(int64_t count) {
    const int64_t ranks = cg::this_cluster().num_blocks(), rank = cg::this_cluster().block_rank();
    const int64_t per = (count + ranks - 1) / ranks;
    return {min(count, rank * per), min(count, (rank + 1) * per)};
}

// The shared memory of one cluster reduction: a slot per CTA of the cluster for the partials, and
// the barrier that completes once every CTA's partial has landed.
template <class T>
struct CombineSlots {
    T slot[kMaxCluster];
    uint64_t landed;
};

// By thread 0 of each CTA, before the CTA announces that it has started (cluster_arrive_relaxed):
// the barrier expects one partial from each of the cluster's CTAs.
template <class T>
__device__ void combine_init(CombineSlots<T>& s) {
    if (threadIdx.x != 0) return;
    mbarrier_init(smem_u32(&s.landed), 1);
    mbarrier_arrive_expect_tx(smem_u32(&s.landed), uint32_t(cg::this_cluster().num_blocks() * sizeof(T)));
    fence_mbarrier_init_cluster();
}

// Op over the cluster of each CTA's `v` (the same in every thread of a CTA). Each CTA stores its
// partial into slot[rank] of every CTA by st.async, then waits on its own barrier for all of them;
// the caller has run combine_init and passed a cluster_arrive_relaxed + cluster_wait since every
// CTA started. With a cluster barrier instead, its release made each CTA wait for its global stores
// in flight (the norm's x) before the exchange. Every CTA adds the partials in rank order, so all
// get the same bits: the row's CTAs agree on its norm and its scale. A CTA leaves the exchange once
// every partial has landed in it, and no CTA touches another's shared memory after it, so CTAs may
// exit at will.
template <class Op>
__device__ typename Op::T cluster_combine(typename Op::T v, CombineSlots<typename Op::T>& s) {
    cg::cluster_group cluster = cg::this_cluster();
    const unsigned ranks = cluster.num_blocks();
    if (threadIdx.x < ranks)
        st_async(map_to_rank(smem_u32(&s.slot[cluster.block_rank()]), threadIdx.x), v, map_to_rank(smem_u32(&s.landed), threadIdx.x));
    mbarrier_wait_cluster(smem_u32(&s.landed), 0);
    typename Op::T r{};
    for (unsigned i = 0; i < ranks; ++i) r = Op::apply(r, s.slot[i]);
    return r;
}

// Cluster (., r): row r, the row's slice in shared memory between the two passes the norm needs:
// x + add (written back to x) times the norm weight, its sum of squares and its amax; then times
// 1 / rms(x + add), and the codes. The amax of the normalized row is the amax of the first pass
// times 1 / rms (rounding is monotonic, so the bits are those of the normalized values' amax), so
// one reduction serves both. Each thread takes 4 consecutive columns per pass (d % 4 == 0).
template <bool F32>
__global__ void __launch_bounds__(kMaxRowThreads) add_norm_quantize_kernel(float* x, ScaledRows add, const float* weight, float eps, int64_t n, int64_t d, ActOut out) {
    extern __shared__ float4 row4[];
    __shared__ CombineSlots<float2> combine;
    const int64_t r = blockIdx.y, d4 = d / 4;
    combine_init(combine);
    const RowSlice sl = row_slice(d4);
    // The norm weight is no kernel's output, so a thread's first piece of it is loaded before the
    // wait for the predecessor. Loaded in the loop, it came after the store to x, past which the
    // compiler may not move a load of floats: one more memory latency in the chain (the norms and
    // SwiGLU of a Qwen3-32B step at batch 32 on the H200: 0.817 -> 0.800 ms; bench/README.md).
    const float4* w4 = reinterpret_cast<const float4*>(weight);
    const int64_t c0 = sl.begin + threadIdx.x;
    const float4 w_first = c0 < sl.end ? w4[c0] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    wait_for_predecessor();
    allow_dependents();  // the next GEMM may launch; it waits for this grid's completion (launch.h)
    if (r >= n) return zero_columns(out, r, 4 * sl.begin, 4 * sl.end);
    cluster_arrive_relaxed();
    float4* x4 = reinterpret_cast<float4*>(x + r * d);
    float ss = 0, amax = 0;
    // The pass for a kernel with and without rows to add, compiled apart: with the add's presence a
    // runtime condition inside the loop, ptxas issued the add's loads, the scales' and x's one
    // after another, a memory latency each.
    const auto pass1 = [&](auto with_add) {
        for (int64_t c = c0; c < sl.end; c += blockDim.x) {
            // The norm weight is applied now, so that pass 2 waits on no global load.
            const float4 w = c == c0 ? w_first : w4[c];
            float4 v;
            if constexpr (decltype(with_add)::value) {
                // x is used last, and ptxas issues its load once the scales have landed; a prefetch
                // into L1 takes its memory latency with theirs.
                asm volatile("prefetch.global.L1 [%0];" ::"l"(x4 + c));
                const Pieces4<F32, kMaxKParts> pa = fetch4<F32, kMaxKParts>(add, r, c);
                const float4 x = x4[c];
                const float4 a = scale4<F32>(add, pa, row_factor(add, r));
                v = {x.x + a.x, x.y + a.y, x.z + a.z, x.w + a.w};
                x4[c] = v;
            } else {
                v = x4[c];
            }
            const float4 vw = {v.x * w.x, v.y * w.y, v.z * w.z, v.w * w.w};
            row4[c - sl.begin] = vw;
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
            amax = fmaxf(amax, fmaxf(fmaxf(fabsf(vw.x), fabsf(vw.y)), fmaxf(fabsf(vw.z), fabsf(vw.w))));
        }
    };
    if (add.raw)
        pass1(std::true_type{});
    else
        pass1(std::false_type{});
    const float2 cta = block_reduce<SumMaxOp>({ss, amax});
    cluster_wait();  // every CTA of the row has started
    const float2 row = cluster_combine<SumMaxOp>(cta, combine);
    const float inv = rsqrtf(row.x / float(d) + eps);
    // Each thread reads back only the columns it wrote: no barrier between the passes.
    if (out.dtype == GemmDType::BF16) {
        __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(static_cast<bf16*>(out.data) + r * out.ld);
        for (int64_t c = sl.begin + threadIdx.x; c < sl.end; c += blockDim.x) {
            const float4 v = row4[c - sl.begin];
            o[2 * c] = __floats2bfloat162_rn(v.x * inv, v.y * inv);
            o[2 * c + 1] = __floats2bfloat162_rn(v.z * inv, v.w * inv);
        }
        return;
    }
    const float s = row_scale_of(row.y * inv);
    if (threadIdx.x == 0 && sl.begin == 0) out.row_scale[r] = s;
    uchar4* o = reinterpret_cast<uchar4*>(static_cast<uint8_t*>(out.data) + r * out.ld);
    for (int64_t c = sl.begin + threadIdx.x; c < sl.end; c += blockDim.x) {
        const float4 v = row4[c - sl.begin];
        const float4 y = {v.x * inv, v.y * inv, v.z * inv, v.w * inv};
        o[c] = make_uchar4(to_e4m3(y.x / s), to_e4m3(y.y / s), to_e4m3(y.z / s), to_e4m3(y.w / s));
    }
}

// Cluster (., r): row r, its slice of z in shared memory between the two passes the scale needs
// (so h is read once): z = silu(gate) * up, its amax, then the codes. Each thread takes 8
// consecutive columns at a time (the regions are multiples of 8 wide).
__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.0f + __expf(-g)) * u; }

template <bool F32>
__global__ void __launch_bounds__(kMaxRowThreads) swiglu_quantize_kernel(ScaledRows h, SwigluLayout L, int64_t n, ActOut z) {
    extern __shared__ float4 z4[];  // the slice, 2 float4 per group of 8 columns
    __shared__ CombineSlots<float> combine;
    const int64_t r = blockIdx.y, width = L.z_width();
    const RowSlice sl = row_slice(width / 8);
    combine_init(combine);
    wait_for_predecessor();
    allow_dependents();  // as in add_norm_quantize_kernel
    if (r >= n) return zero_columns(z, r, 8 * sl.begin, 8 * sl.end);
    const bool fp8 = z.dtype == GemmDType::FP8;  // only the FP8 scale needs the cluster
    if (fp8) cluster_arrive_relaxed();
    float amax = 0;
    for (int64_t c8 = sl.begin + threadIdx.x; c8 < sl.end; c8 += blockDim.x) {
        const int64_t c = 8 * c8;
        const int64_t g = c < L.sparse ? c : 2 * L.sparse + (c - L.sparse);
        const int64_t u = c < L.sparse ? L.sparse + c : 2 * L.sparse + L.dense + (c - L.sparse);
        const Pieces4<F32, 1> pg0 = fetch4<F32, 1>(h, r, g / 4), pg1 = fetch4<F32, 1>(h, r, g / 4 + 1);
        const Pieces4<F32, 1> pu0 = fetch4<F32, 1>(h, r, u / 4), pu1 = fetch4<F32, 1>(h, r, u / 4 + 1);
        const float rs = row_factor(h, r);
        const float4 g0 = scale4<F32>(h, pg0, rs), g1 = scale4<F32>(h, pg1, rs);
        const float4 u0 = scale4<F32>(h, pu0, rs), u1 = scale4<F32>(h, pu1, rs);
        const float4 a = {silu_mul(g0.x, u0.x), silu_mul(g0.y, u0.y), silu_mul(g0.z, u0.z), silu_mul(g0.w, u0.w)};
        const float4 b = {silu_mul(g1.x, u1.x), silu_mul(g1.y, u1.y), silu_mul(g1.z, u1.z), silu_mul(g1.w, u1.w)};
        z4[2 * (c8 - sl.begin)] = a;
        z4[2 * (c8 - sl.begin) + 1] = b;
        amax = fmaxf(amax, fmaxf(fmaxf(fmaxf(fabsf(a.x), fabsf(a.y)), fmaxf(fabsf(a.z), fabsf(a.w))),
                                 fmaxf(fmaxf(fabsf(b.x), fabsf(b.y)), fmaxf(fabsf(b.z), fabsf(b.w)))));
    }
    // Each thread reads back only the groups it wrote.
    if (!fp8) {
        uint4* o = reinterpret_cast<uint4*>(static_cast<bf16*>(z.data) + r * z.ld);
        for (int64_t c8 = sl.begin + threadIdx.x; c8 < sl.end; c8 += blockDim.x) {
            const float4 a = z4[2 * (c8 - sl.begin)], b = z4[2 * (c8 - sl.begin) + 1];
            const __nv_bfloat162 p[4] = {__floats2bfloat162_rn(a.x, a.y), __floats2bfloat162_rn(a.z, a.w), __floats2bfloat162_rn(b.x, b.y),
                                         __floats2bfloat162_rn(b.z, b.w)};
            o[c8] = *reinterpret_cast<const uint4*>(p);
        }
        return;
    }
    const float amax_cta = block_reduce<MaxOp>(amax);
    cluster_wait();
    const float s = row_scale_of(cluster_combine<MaxOp>(amax_cta, combine));
    if (threadIdx.x == 0 && sl.begin == 0) z.row_scale[r] = s;
    uint2* o = reinterpret_cast<uint2*>(static_cast<uint8_t*>(z.data) + r * z.ld);
    for (int64_t c8 = sl.begin + threadIdx.x; c8 < sl.end; c8 += blockDim.x) {
        const float4 a = z4[2 * (c8 - sl.begin)], b = z4[2 * (c8 - sl.begin) + 1];
        const uchar4 lo = make_uchar4(to_e4m3(a.x / s), to_e4m3(a.y / s), to_e4m3(a.z / s), to_e4m3(a.w / s));
        const uchar4 hi = make_uchar4(to_e4m3(b.x / s), to_e4m3(b.y / s), to_e4m3(b.z / s), to_e4m3(b.w / s));
        o[c8] = make_uint2(*reinterpret_cast<const unsigned*>(&lo), *reinterpret_cast<const unsigned*>(&hi));
    }
}

// Larger keys win: the float's bits made order-preserving as unsigned, then the complement of
// the index (the lowest index among equal values wins).
__device__ __forceinline__ unsigned long long argmax_key(float v, int64_t j) {
    const unsigned bits = __float_as_uint(v);
    const unsigned ordered = (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
    return (static_cast<unsigned long long>(ordered) << 32) | (0xffffffffu - static_cast<unsigned>(j));
}

constexpr int64_t kArgmaxChunk = 4096;

template <bool F32>
__global__ void argmax_kernel(ScaledRows logits, int64_t vocab, unsigned long long* best) {
    const int64_t r = blockIdx.x, j0 = blockIdx.y * kArgmaxChunk, j1 = min(vocab, j0 + kArgmaxChunk);
    unsigned long long key = 0;
    for (int64_t j = j0 + threadIdx.x; j < j1; j += blockDim.x) key = max(key, argmax_key(logits.value<F32>(r, j), j));
    for (int o = 16; o > 0; o >>= 1) key = max(key, __shfl_xor_sync(0xffffffffu, key, o));
    if (threadIdx.x % 32 == 0) atomicMax(best + r, key);
}

__global__ void advance_kernel(const unsigned long long* best, int64_t n, int32_t* tokens, int32_t* lengths) {
    const int64_t r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n) return;
    tokens[r] = int32_t(0xffffffffu - unsigned(best[r] & 0xffffffffu));
    lengths[r] += 1;
}

template <bool F32>
__global__ void logits_f32_kernel(ScaledRows logits, int64_t vocab, float* out) {
    const int64_t r = blockIdx.y;
    for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < vocab; j += int64_t(gridDim.x) * blockDim.x)
        out[r * vocab + j] = logits.value<F32>(r, j);
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

void launch_embed(const int32_t* tokens, const bf16* table, float* x, int64_t n, int64_t d, cudaStream_t stream) {
    embed_kernel<<<unsigned(n), kRowThreads, 0, stream>>>(tokens, table, x, d);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "embed n=", n, " d=", d);
}

// The kernel over `rows` rows of `units` work units each, a cluster of CTAs per row, with about
// kUnitsPerCta units (one per thread) per CTA; `unit_floats` of shared memory per unit.
template <typename... Params, typename... Args>
void launch_row_clusters(void (*kernel)(Params...), int64_t rows, int64_t units, int64_t unit_floats, cudaStream_t stream,
                         Args&&... args) {
    constexpr int64_t kUnitsPerCta = 256;
    const int64_t ranks = std::clamp<int64_t>(ceil_div(units, kUnitsPerCta), 1, kMaxCluster);
    const int64_t slice = ceil_div(units, ranks);
    const LaunchShape shape{dim3(unsigned(ranks), unsigned(rows)), dim3(unsigned(std::clamp<int64_t>(ceil_div(slice, 32) * 32, 32, kMaxRowThreads))),
                            size_t(slice * unit_floats) * sizeof(float), unsigned(ranks)};
    SPENSE_CUDA_CHECK(launch_pdl(kernel, shape, stream, std::forward<Args>(args)...), "clusters of ", ranks, " CTAs over ", rows, " rows of ",
                      units, " units");
}

void launch_add_norm_quantize(float* x, const ScaledRows& add, const float* norm_weight, float eps, int64_t n, int64_t rows,
                              int64_t d, const ActOut& out, cudaStream_t stream) {
    SPENSE_CHECK(d % 4 == 0 && d <= kMaxCluster * kMaxSliceFloats, "add_norm_quantize: hidden size ", d,
                 " must be a multiple of 4 and at most ", kMaxCluster * kMaxSliceFloats);
    SPENSE_CHECK(!add.raw || add.ld % 4 == 0, "add_norm_quantize: the added rows' stride ", add.ld, " is not a multiple of 4");
    SPENSE_CHECK(!add.raw || (add.parts.count >= 1 && add.parts.count <= kMaxKParts && add.parts.stride % 4 == 0),
                 "add_norm_quantize: ", add.parts.count, " parts ", add.parts.stride, " elements apart (1 to ", kMaxKParts,
                 ", a multiple of 4 apart)");
    with_product_type(add, [&](auto f32) {
        launch_row_clusters(add_norm_quantize_kernel<f32>, rows, d / 4, 4, stream, x, add, norm_weight, eps, n, d, out);
    });
}

void launch_swiglu_quantize(const ScaledRows& h, SwigluLayout layout, int64_t n, int64_t rows, const ActOut& z, cudaStream_t stream) {
    const int64_t width = layout.z_width();
    SPENSE_CHECK(width <= kMaxCluster * kMaxSliceFloats && width % 8 == 0 && layout.sparse % 8 == 0, "swiglu_quantize: intermediate regions ",
                 layout.sparse, " + ", layout.dense, " must be multiples of 8 and at most ", kMaxCluster * kMaxSliceFloats, " wide together");
    SPENSE_CHECK(h.ld % 4 == 0, "swiglu_quantize: the gate_up output's stride ", h.ld, " is not a multiple of 4");
    SPENSE_CHECK(h.parts.count == 1, "swiglu_quantize: the gate_up output must be one product, got ", h.parts.count, " parts");
    with_product_type(h, [&](auto f32) { launch_row_clusters(swiglu_quantize_kernel<f32>, rows, width / 8, 8, stream, h, layout, n, z); });
}

void launch_argmax_advance(const ScaledRows& logits, int64_t n, int64_t vocab, unsigned long long* best, int32_t* tokens,
                           int32_t* lengths, cudaStream_t stream) {
    SPENSE_CHECK(logits.parts.count == 1, "argmax: the logits must be one product, got ", logits.parts.count, " parts");
    SPENSE_CUDA_CHECK(cudaMemsetAsync(best, 0, size_t(n) * sizeof *best, stream), "argmax keys n=", n);
    with_product_type(logits, [&](auto f32) {
        argmax_kernel<f32><<<dim3(unsigned(n), unsigned(ceil_div(vocab, kArgmaxChunk))), kRowThreads, 0, stream>>>(logits, vocab, best);
    });
    SPENSE_CUDA_CHECK(cudaGetLastError(), "argmax n=", n, " vocab=", vocab);
    advance_kernel<<<unsigned(ceil_div(n, 128)), 128, 0, stream>>>(best, n, tokens, lengths);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "advance n=", n);
}

void launch_logits_f32(const ScaledRows& logits, int64_t n, int64_t vocab, float* out, cudaStream_t stream) {
    SPENSE_CHECK(logits.parts.count == 1, "logits_f32: the logits must be one product, got ", logits.parts.count, " parts");
    with_product_type(logits, [&](auto f32) {
        logits_f32_kernel<f32><<<dim3(unsigned(std::min<int64_t>(ceil_div(vocab, kRowThreads), 1024)), unsigned(n)), kRowThreads, 0,
                                 stream>>>(logits, vocab, out);
    });
    SPENSE_CUDA_CHECK(cudaGetLastError(), "logits_f32 n=", n, " vocab=", vocab);
}

}  // namespace spense::gpu
