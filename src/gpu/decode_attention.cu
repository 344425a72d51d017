#include "gpu/decode_attention.h"

#include <cuda_fp8.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "core/error.h"
#include "gpu/check.h"
#include "gpu/kernels.h"
#include "gpu/launch.h"

namespace spense::gpu {

namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kWarps = 4, kThreads = 32 * kWarps;
constexpr int kKeys = 16 * kWarps;  // positions per tile: 16 per warp, the N of two m16n8 score tiles
constexpr int kRows = 16;           // query heads per block: the M of the MMAs (a group of G < 16 is padded)
constexpr int kStages = 3;          // tiles in shared memory: two in flight while one is consumed
constexpr int kCombineThreads = 1024;  // pass 2 has one block per sequence: wide, to keep loads in flight

// Chunk choice (pass 1): at full context, about kWaves waves of the blocks the GPU holds at once, so
// that one long sequence among short ones is spread over several SMs; but at least kMinChunk
// positions per block (each block start costs a few memory latencies during which its SM slot
// streams nothing: on an H100 at Qwen3-32B's shape, 16 chunks of 256 took 15% longer than 1 of 4096)
// and at most kMaxSplits chunks (the partials stay small next to the cache).
constexpr int64_t kWaves = 2, kMinChunk = 8 * kKeys, kMaxSplits = 128;

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Shared memory of pass 1 for head dim HD. Rows of Q, K and V tiles are padded by 16 bytes so that
// the 8 row addresses of an ldmatrix fall in distinct banks. Head dim 8 is padded with zero columns
// to 16, the K of one m16n8k16 (the zeros add nothing to the scores).
template <int HD>
struct Layout {
    static constexpr int kDim = HD < 16 ? 16 : HD;
    static constexpr int kStride = kDim + 8;
    static constexpr int kTile = kKeys * kStride;  // elements of one K or V tile
    static constexpr size_t kQBytes = size_t(kRows) * kStride * sizeof(bf16);
    static constexpr size_t kStageBytes = 2 * size_t(kTile) * sizeof(bf16);
    static constexpr size_t kSmem = kQBytes + kStages * kStageBytes;
    // After the last tile the stages hold each warp's output [kRows][kDim] and its row max and sum.
    static constexpr size_t kMergeBytes = size_t(kWarps) * kRows * (kDim + 2) * sizeof(float);
    static_assert(kMergeBytes <= kStages * kStageBytes, "the merge reuses the tile stages");
    static_assert(kDim - HD == 0 || kDim - HD == 8, "padding is one 16-byte piece per row");
};

struct SplitParams {
    const bf16 *q, *k, *v;
    const int32_t* lengths;
    float *o_part, *lse_part;  // [batch, n_heads, splits, head_dim] and [batch, n_heads, splits]
    int64_t n_heads, n_kv_heads, group, head_tiles, max_ctx, window, chunk, splits;
    float score_scale;  // log2(e) / sqrt(head_dim): scores in the log2 domain, softmax by exp2
};

struct CombineParams {
    const float *o_part, *lse_part;
    const int32_t* lengths;
    bf16* values;
    uint8_t* fp8;
    float* row_scale;
    int64_t n_heads, head_dim, max_ctx, window, chunk, splits;
};

// The keys of sequence b, [lo, hi), and the chunks first..last that hold them (none when
// last < first). Both passes decide from this alone which chunks have a partial result.
struct KeySpan {
    int64_t lo, hi, first, last;
};
__device__ __forceinline__ KeySpan key_span(const int32_t* lengths, int64_t b, int64_t max_ctx, int64_t window, int64_t chunk) {
    // Clamped so that a wrong length cannot send the kernels outside the cache.
    const int64_t len = min(max(int64_t(lengths[b]), int64_t(0)), max_ctx);
    if (len == 0) return {0, 0, 0, -1};
    const int64_t lo = window > 0 ? max(int64_t(0), len - window) : 0;
    return {lo, len, lo / chunk, (len - 1) / chunk};
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }

// 16 bytes global -> shared, bypassing L1; with fill false it reads nothing and writes zeros.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool fill) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(fill ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// d += a b: a the m16k16 row-major fragment, (b0, b1) the k16n8 column-major one, d the m16n8 one.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    const __nv_bfloat162 p = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&p);
}

// Pass 1: block (KV head * head_tiles + head tile, sequence, chunk). The chunk varies slowest, so
// that the blocks of the first chunks, which hold keys at any length, are dispatched first and the
// blocks of chunks past a short length (which return at once) do not hold SM slots before them. Tiles of kKeys positions,
// aligned to the chunk start, stream through kStages shared-memory stages; warp w takes positions
// [16w, 16w + 16) of each tile with its own online softmax (m, l, o) for the 16 head rows, and the
// four warps' results are merged at the end.
//
// Fragments (PTX ISA, mma.m16n8k16): lane = 4 g + t holds rows g and g + 8 of the score and output
// tiles, columns 2t and 2t + 1 of each n8 piece. The two n8 score pieces of a warp's 16 keys are,
// packed to BF16, exactly the A fragment of the P V product (k = those 16 keys), so P never leaves
// registers.
template <int HD>
__global__ void __launch_bounds__(kThreads) decode_split_kernel(SplitParams p) {
    using L = Layout<HD>;
    constexpr int kDim = L::kDim, kStride = L::kStride;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16* qs = reinterpret_cast<bf16*>(smem);                     // [kRows][kStride]
    bf16* stages = reinterpret_cast<bf16*>(smem + L::kQBytes);  // stage s: K tile at 2 s kTile, V tile after it

    const int64_t split = blockIdx.z, kvh = blockIdx.x / p.head_tiles, head_tile = blockIdx.x % p.head_tiles, b = blockIdx.y;
    wait_for_predecessor();  // q and the new cache entries (launch.h)
    const KeySpan span = key_span(p.lengths, b, p.max_ctx, p.window, p.chunk);
    if (split < span.first || split > span.last) return;  // no key in this chunk: pass 2 skips it
    const int64_t begin = max(split * p.chunk, span.lo), end = min((split + 1) * p.chunk, span.hi);
    const int64_t tile0 = begin / kKeys * kKeys;
    const int n_tiles = int(ceil_div(end - tile0, kKeys));
    const int64_t h0 = kvh * p.group + head_tile * kRows;
    const int rows = int(min(int64_t(kRows), p.group - head_tile * kRows));
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;

    // Q of the block's heads, in the first cp.async group with the first tile (one memory latency
    // before the first product); rows past the group and columns past HD are zero.
    for (int i = tid; i < kRows * kDim / 8; i += kThreads) {
        const int r = i / (kDim / 8), c = i % (kDim / 8) * 8;
        const bool in = r < rows && c < HD;
        cp_async_16(smem_u32(qs + r * kStride + c), in ? p.q + (b * p.n_heads + h0 + r) * HD + c : p.q, in);
    }
    if constexpr (HD < kDim) {  // the padding columns of every K and V tile, which cp.async never writes
        for (int i = tid; i < kStages * 2 * kKeys; i += kThreads) *reinterpret_cast<uint4*>(stages + i * kStride + HD) = make_uint4(0, 0, 0, 0);
    }

    const size_t kv_base = size_t((b * p.n_kv_heads + kvh) * p.max_ctx) * HD;
    const bf16* kg = p.k + kv_base;
    const bf16* vg = p.v + kv_base;
    // Tile t into stage s: row r is position tile0 + kKeys t + r, zero outside [begin, end) (so
    // that neither garbage past len nor keys before the window reach the products).
    auto load_tile = [&](int t, int s) {
        constexpr int kPieces = HD / 8;  // 16-byte pieces per row
        constexpr int kPasses = (kKeys * kPieces + kThreads - 1) / kThreads;
        bf16* ks = stages + s * 2 * L::kTile;
        bf16* vs = ks + L::kTile;
        const int64_t key0 = tile0 + int64_t(t) * kKeys;
#pragma unroll
        for (int j = 0; j < kPasses; ++j) {
            const int i = tid + j * kThreads;
            if (kKeys * kPieces % kThreads != 0 && i >= kKeys * kPieces) break;
            const int r = i / kPieces, c = i % kPieces * 8;
            const int64_t key = key0 + r;
            const bool in = key >= begin && key < end;
            const size_t off = size_t(in ? key : begin) * HD + c;
            cp_async_16(smem_u32(ks + r * kStride + c), kg + off, in);
            cp_async_16(smem_u32(vs + r * kStride + c), vg + off, in);
        }
    };

#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
        if (s < n_tiles) load_tile(s, s);
        cp_async_commit();
    }

    float o[kDim / 8][4] = {};
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // rows g and g + 8; l summed over this lane's columns
    // ldmatrix row addresses: lanes 8i..8i+7 give the rows of matrix i.
    // Q (A, m16k16): matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15), in the order a0 a1 a2 a3.
    const uint32_t q_addr = smem_u32(qs + (lane % 16) * kStride + (lane / 16) * 8);
    // K (B of the scores, k = head dim): matrices keys (0-7 | 8-15) x dims (0-7 | 8-15), giving b0 b1
    // of the first n8 piece, then of the second.
    const int k_off = (warp * 16 + (lane / 16) * 8 + lane % 8) * kStride + (lane / 8 % 2) * 8;
    // V (B of P V, k = keys), transposed: matrices dims (0-7 | 8-15) x keys (0-7 | 8-15).
    const int v_off = (warp * 16 + lane % 16) * kStride + (lane / 16) * 8;

    for (int t = 0; t < n_tiles; ++t) {
        cp_async_wait<kStages - 2>();
        __syncthreads();  // tile t is visible to all; every warp is done with tile t - 1, whose stage is refilled now
        if (t + kStages - 1 < n_tiles) load_tile(t + kStages - 1, (t + kStages - 1) % kStages);
        cp_async_commit();  // possibly empty: keeps the group count in step with t

        const bf16* ks = stages + (t % kStages) * 2 * L::kTile;
        const bf16* vs = ks + L::kTile;
        float s[2][4] = {};  // scores of keys 8j + (2 t4, 2 t4 + 1) for rows g (elements 0, 1) and g + 8 (2, 3)
        const uint32_t k_addr = smem_u32(ks + k_off);
#pragma unroll
        for (int kk = 0; kk < kDim; kk += 16) {
            uint32_t a[4], kb[4];
            ldmatrix_x4(a, q_addr + kk * sizeof(bf16));
            ldmatrix_x4(kb, k_addr + kk * sizeof(bf16));
            mma_bf16(s[0], a, kb[0], kb[1]);
            mma_bf16(s[1], a, kb[2], kb[3]);
        }

        // Online softmax in the log2 domain: m the running row max, l the running sum of
        // exp2(score - m); earlier terms are rescaled by exp2(m_old - m_new).
        const int64_t key = tile0 + int64_t(t) * kKeys + warp * 16 + 2 * t4;
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int64_t kj = key + 8 * j + (e & 1);
                s[j][e] = kj >= begin && kj < end ? s[j][e] * p.score_scale : -INFINITY;
                mx[e / 2] = fmaxf(mx[e / 2], s[j][e]);
            }
        float corr[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            mx[i] = fmaxf(mx[i], __shfl_xor_sync(kFull, mx[i], 1));
            mx[i] = fmaxf(mx[i], __shfl_xor_sync(kFull, mx[i], 2));
            const float m_new = fmaxf(m[i], mx[i]);
            const float base = m_new == -INFINITY ? 0.0f : m_new;  // no key in this row yet: every term is exp2(-inf) = 0
            corr[i] = exp2f(m[i] - base);
            m[i] = m_new;
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < 2; ++j)
#pragma unroll
                for (int e = 2 * i; e < 2 * i + 2; ++e) {
                    s[j][e] = exp2f(s[j][e] - base);
                    sum += s[j][e];
                }
            l[i] = l[i] * corr[i] + sum;
        }
        const uint32_t pa[4] = {pack_bf16(s[0][0], s[0][1]), pack_bf16(s[0][2], s[0][3]), pack_bf16(s[1][0], s[1][1]),
                                pack_bf16(s[1][2], s[1][3])};
#pragma unroll
        for (int n = 0; n < kDim / 8; ++n) {
            o[n][0] *= corr[0];
            o[n][1] *= corr[0];
            o[n][2] *= corr[1];
            o[n][3] *= corr[1];
        }
        const uint32_t v_addr = smem_u32(vs + v_off);
#pragma unroll
        for (int n0 = 0; n0 < kDim; n0 += 16) {
            uint32_t vb[4];
            ldmatrix_x4_trans(vb, v_addr + n0 * sizeof(bf16));
            mma_bf16(o[n0 / 8], pa, vb[0], vb[1]);
            mma_bf16(o[n0 / 8 + 1], pa, vb[2], vb[3]);
        }
    }

    allow_dependents();  // this block streams no more: pass 2 may take SM slots

    // Merge the warps: o = sum_w o_w exp2(m_w - M) / sum_w l_w exp2(m_w - M), M = max_w m_w (finite:
    // the chunk holds a key, and every row sees every key). A warp that saw no key has m_w = -inf
    // and o_w = 0.
    cp_async_wait<0>();
    __syncthreads();  // the stages are free
    float* mo = reinterpret_cast<float*>(stages);  // [kWarps][kRows][kDim]
    float* mm = mo + kWarps * kRows * kDim;        // [kWarps][kRows]
    float* ml = mm + kWarps * kRows;               // [kWarps][kRows]
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        l[i] += __shfl_xor_sync(kFull, l[i], 1);
        l[i] += __shfl_xor_sync(kFull, l[i], 2);
    }
    float* wo = mo + warp * kRows * kDim;
#pragma unroll
    for (int n = 0; n < kDim / 8; ++n) {
        wo[g * kDim + 8 * n + 2 * t4] = o[n][0];
        wo[g * kDim + 8 * n + 2 * t4 + 1] = o[n][1];
        wo[(g + 8) * kDim + 8 * n + 2 * t4] = o[n][2];
        wo[(g + 8) * kDim + 8 * n + 2 * t4 + 1] = o[n][3];
    }
    if (t4 == 0) {
        mm[warp * kRows + g] = m[0];
        mm[warp * kRows + g + 8] = m[1];
        ml[warp * kRows + g] = l[0];
        ml[warp * kRows + g + 8] = l[1];
    }
    __syncthreads();
    for (int i = tid; i < rows * HD; i += kThreads) {
        const int r = i / HD, d = i % HD;
        float mmax = -INFINITY;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) mmax = fmaxf(mmax, mm[w * kRows + r]);
        float sum = 0.0f, acc = 0.0f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) {
            const float f = exp2f(mm[w * kRows + r] - mmax);
            sum += ml[w * kRows + r] * f;
            acc += mo[(w * kRows + r) * kDim + d] * f;
        }
        const int64_t row = (b * p.n_heads + h0 + r) * p.splits + split;
        p.o_part[row * HD + d] = acc / sum;
        if (d == 0) p.lse_part[row] = mmax + log2f(sum);
    }
}

// Pass 2: block b merges, for every 4 consecutive outputs of every head (one thread each in
// turn), the chunks holding keys in one pass with the running max: m' = max(m, lse_s),
// acc' = acc exp2(m - m') + o_s exp2(lse_s - m'), l' likewise with 1 for o_s; o = acc / l. The
// loads of successive chunks do not depend on one another. The float row goes to shared memory,
// then out as BF16, or as E4M3 codes of row / s with s = amax / 448 (1 when amax is 0).
__global__ void __launch_bounds__(kCombineThreads) decode_combine_kernel(CombineParams p) {
    extern __shared__ float4 row4[];  // [n_heads * head_dim / 4]
    __shared__ float warp_amax[kCombineThreads / 32];
    const float* row = reinterpret_cast<const float*>(row4);
    const int64_t b = blockIdx.x, width = p.n_heads * p.head_dim;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    wait_for_predecessor();
    const KeySpan span = key_span(p.lengths, b, p.max_ctx, p.window, p.chunk);
    float amax = 0.0f;
    for (int64_t item = threadIdx.x; item < width / 4; item += kCombineThreads) {
        const int64_t h = item * 4 / p.head_dim, d = item * 4 % p.head_dim, head = b * p.n_heads + h;
        const float* lse = p.lse_part + head * p.splits;
        const float4* part = reinterpret_cast<const float4*>(p.o_part + head * p.splits * p.head_dim + d);
        float m = -INFINITY, l = 0.0f;
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 4
        for (int64_t s = span.first; s <= span.last; ++s) {
            const float e = lse[s];  // finite: the chunk holds a key
            const float4 o = part[s * p.head_dim / 4];
            const float m_new = fmaxf(m, e), c = exp2f(m - m_new), w = exp2f(e - m_new);
            l = l * c + w;
            acc = make_float4(acc.x * c + w * o.x, acc.y * c + w * o.y, acc.z * c + w * o.z, acc.w * c + w * o.w);
            m = m_new;
        }
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // no chunk (a zero length): a zero row
        const float4 val = make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv);
        row4[item] = val;
        amax = fmaxf(amax, fmaxf(fmaxf(fabsf(val.x), fabsf(val.y)), fmaxf(fabsf(val.z), fabsf(val.w))));
    }
    __syncthreads();
    if (!p.fp8) {
        for (int64_t i = threadIdx.x; i < width; i += kCombineThreads) p.values[b * width + i] = __float2bfloat16_rn(row[i]);
        return;
    }
    for (int off = 16; off > 0; off /= 2) amax = fmaxf(amax, __shfl_xor_sync(kFull, amax, off));
    if (lane == 0) warp_amax[warp] = amax;
    __syncthreads();
    amax = 0.0f;
    for (int w = 0; w < kCombineThreads / 32; ++w) amax = fmaxf(amax, warp_amax[w]);
    const float scale = amax > 0.0f ? amax / kE4M3Max : 1.0f;
    for (int64_t i = threadIdx.x; i < width; i += kCombineThreads)
        p.fp8[b * width + i] = __nv_cvt_float_to_fp8(row[i] / scale, __NV_SATFINITE, __NV_E4M3);
    if (threadIdx.x == 0) p.row_scale[b] = scale;
}

bool supported_head_dim(int64_t hd) { return hd == 8 || hd == 16 || hd == 32 || hd == 64 || hd == 128 || hd == 256; }

// f(std::integral_constant<int, HD>) for the shape's head dim (one of the supported ones).
template <typename F>
void with_head_dim(int64_t hd, F&& f) {
    switch (hd) {
    case 8: return f(std::integral_constant<int, 8>{});
    case 16: return f(std::integral_constant<int, 16>{});
    case 32: return f(std::integral_constant<int, 32>{});
    case 64: return f(std::integral_constant<int, 64>{});
    case 128: return f(std::integral_constant<int, 128>{});
    case 256: return f(std::integral_constant<int, 256>{});
    default: fail("decode attention: head_dim ", hd, " is not supported (8, 16, 32, 64, 128 or 256)");
    }
}

std::string describe(const DecodeAttentionShape& s) {
    return cat("decode attention [batch ", s.batch, ", ", s.n_heads, " heads over ", s.n_kv_heads, " KV heads of dim ", s.head_dim,
               ", context ", s.max_ctx, ", window ", s.window, "]");
}

// `units` blocks per chunk (sequences x KV heads x head tiles), `slots` blocks resident on the GPU.
int64_t choose_chunk(int64_t max_ctx, int64_t units, int64_t slots) {
    const int64_t splits = std::max<int64_t>(1, ceil_div(kWaves * slots, units));
    int64_t chunk = ceil_div(ceil_div(max_ctx, splits), kKeys) * kKeys;
    chunk = std::max({chunk, kMinChunk, ceil_div(ceil_div(max_ctx, kMaxSplits), kKeys) * kKeys});
    return std::min(chunk, ceil_div(max_ctx, kKeys) * kKeys);
}

}  // namespace

DecodeAttention::DecodeAttention(const DecodeAttentionShape& shape, const cudaDeviceProp& props) : shape_(shape) {
    const DecodeAttentionShape& s = shape_;
    const std::string what = describe(s);
    SPENSE_CHECK(s.batch >= 1 && s.batch <= 65535, what, ": batch must lie in [1, 65535]");
    SPENSE_CHECK(s.n_heads >= 1 && s.n_kv_heads >= 1 && s.n_heads % s.n_kv_heads == 0, what,
                 ": n_heads must be a positive multiple of n_kv_heads");
    SPENSE_CHECK(supported_head_dim(s.head_dim), what, ": head_dim must be 8, 16, 32, 64, 128 or 256");
    SPENSE_CHECK(s.max_ctx >= 1, what, ": max_ctx must be >= 1");
    SPENSE_CHECK(s.window >= 0, what, ": window must be >= 0 (0: full causal)");
    SPENSE_CHECK(s.chunk >= 0 && s.chunk % kKeys == 0, what, ": chunk ", s.chunk, " must be a multiple of ", kKeys, " (0: automatic)");
    head_tiles_ = ceil_div(s.n_heads / s.n_kv_heads, kRows);

    int64_t slots = 0;
    with_head_dim(s.head_dim, [&](auto hd) {
        constexpr int HD = decltype(hd)::value;
        split_smem_ = Layout<HD>::kSmem;
        SPENSE_CHECK(split_smem_ <= props.sharedMemPerBlockOptin, what, ": needs ", split_smem_, " bytes of shared memory per block, the GPU has ",
                     props.sharedMemPerBlockOptin);
        SPENSE_CUDA_CHECK(cudaFuncSetAttribute(decode_split_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(split_smem_)), what);
        int per_sm = 0;
        SPENSE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, decode_split_kernel<HD>, kThreads, split_smem_), what);
        slots = int64_t(std::max(per_sm, 1)) * props.multiProcessorCount;
    });
    chunk_ = s.chunk > 0 ? s.chunk : choose_chunk(s.max_ctx, s.batch * s.n_kv_heads * head_tiles_, slots);
    splits_ = ceil_div(s.max_ctx, chunk_);
    SPENSE_CHECK(splits_ <= 65535, what, ": ", splits_, " chunks of ", chunk_, " exceed the grid (use a larger chunk)");

    combine_smem_ = size_t(s.n_heads * s.head_dim) * sizeof(float);
    SPENSE_CHECK(combine_smem_ <= props.sharedMemPerBlockOptin, what, ": an output row of ", s.n_heads * s.head_dim,
                 " floats does not fit in shared memory");
    SPENSE_CUDA_CHECK(cudaFuncSetAttribute(decode_combine_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(combine_smem_)), what);
}

size_t DecodeAttention::workspace_bytes() const {
    return size_t(shape_.batch * shape_.n_heads * splits_ * (shape_.head_dim + 1)) * sizeof(float);
}

void DecodeAttention::run(const bf16* q, const bf16* k, const bf16* v, const int32_t* lengths, const Output& out, void* workspace,
                          cudaStream_t stream) const {
    const DecodeAttentionShape& s = shape_;
    const auto aligned = [](const void* ptr, uintptr_t a) { return reinterpret_cast<uintptr_t>(ptr) % a == 0; };
    SPENSE_CHECK(q && k && v && lengths && aligned(q, 16) && aligned(k, 16) && aligned(v, 16), describe(s),
                 ": q, k, v and lengths must be given, q, k and v 16-byte aligned");
    SPENSE_CHECK(out.fp8 ? out.row_scale != nullptr : out.values != nullptr, describe(s),
                 ": the output needs BF16 values, or FP8 codes and row scales");
    SPENSE_CHECK(workspace && aligned(workspace, 16), describe(s), ": the workspace must be given, 16-byte aligned");

    float* o_part = static_cast<float*>(workspace);
    float* lse_part = o_part + s.batch * s.n_heads * splits_ * s.head_dim;
    const SplitParams sp{q,         k,        v,         lengths,   o_part, lse_part, s.n_heads, s.n_kv_heads, s.n_heads / s.n_kv_heads,
                         head_tiles_, s.max_ctx, s.window, chunk_, splits_, float(1.4426950408889634 / std::sqrt(double(s.head_dim)))};
    const dim3 grid(unsigned(s.n_kv_heads * head_tiles_), unsigned(s.batch), unsigned(splits_));
    with_head_dim(s.head_dim, [&](auto hd) {
        SPENSE_CUDA_CHECK(launch_pdl(decode_split_kernel<decltype(hd)::value>, LaunchShape{grid, dim3(kThreads), split_smem_}, stream, sp),
                          describe(s), ", pass 1: ", splits_, " chunks of ", chunk_);
    });

    const CombineParams cp{o_part, lse_part, lengths, out.values, out.fp8, out.row_scale, s.n_heads, s.head_dim, s.max_ctx, s.window, chunk_, splits_};
    SPENSE_CUDA_CHECK(launch_pdl(decode_combine_kernel, LaunchShape{dim3(unsigned(s.batch)), dim3(kCombineThreads), combine_smem_}, stream, cp),
                      describe(s), ", pass 2");
}

}  // namespace spense::gpu
