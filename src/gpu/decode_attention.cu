#include "gpu/decode_attention.h"

#include <cuda_fp8.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cmath>
#include <string>
#include <type_traits>

#include "core/error.h"
#include "gpu/check.h"
#include "gpu/kernels.h"
#include "gpu/launch.h"
#include "gpu/mbarrier.h"
#include "gpu/ticket.h"

namespace spense::gpu {

namespace {

constexpr unsigned kFull = 0xffffffffu;
// A block: kWarps warps that compute (the consumers) and one producer warp that streams the tiles.
constexpr int kWarps = 4, kConsumers = 32 * kWarps, kProducer = kWarps, kThreads = kConsumers + 32;
constexpr int kKeys = 16 * kWarps;  // positions per tile: 16 per warp, the N of two m16n8 score tiles
constexpr int kRows = 16;           // query heads per block: the M of the MMAs (a group of G < 16 is padded)
constexpr int kStages = 3;          // tiles in shared memory, all of them in flight while the consumers catch up

// Chunk choice, at full context: the split of the context into chunks that minimizes
//   waves(splits) x (chunk + kBlockCost),  waves = ceil(units x splits / slots),
// the time of `units` blocks per chunk when the GPU holds `slots` blocks at once, each block taking
// its chunk's positions plus a fixed cost (its start, a few memory latencies during which its SM
// slot streams nothing, and the merge of its chunk after the streaming), two tiles' worth, of the
// order the H200 shows at Qwen3-32B's layer at batch 32 (256 units in 264 slots), length 4096 (FP8
// out): 1 chunk of 4096 took 141 us, 2 of 2048 149 us, 3 of 1408 156 us. The earlier rule,
// ceil(slots / units) chunks, gave 2 there, and 5 of 832 at batch 8 where 4 of 1024 (one wave)
// took 45 us against 58 (bench/README.md).
// The model takes every sequence at the full context, the step at its slowest: where the units are
// few it splits (batch 1 at Qwen3-32B's shape: 8 chunks of 512), where they fill the GPU it does not,
// and then one long sequence among short ones streams on one block per KV head. At least kMinChunk
// positions a block and at most kMaxSplits chunks (the partials stay small next to the cache).
constexpr int64_t kBlockCost = 2 * kKeys, kMinChunk = 8 * kKeys, kMaxSplits = 128;

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Shared memory of the kernel for head dim HD. Rows of Q, K and V tiles are padded by 16 bytes so that
// the 8 row addresses of an ldmatrix fall in distinct banks. Head dim 8 is padded with zero columns
// to 16, the K of one m16n8k16 (the zeros add nothing to the scores).
template <int HD>
struct Layout {
    static constexpr int kDim = HD < 16 ? 16 : HD;
    static constexpr int kStride = kDim + 8;
    static constexpr int kTile = kKeys * kStride;  // elements of one K or V tile
    static constexpr size_t kQBytes = size_t(kRows) * kStride * sizeof(bf16);
    static constexpr size_t kNewBytes = 2 * size_t(kStride) * sizeof(bf16);  // the new token's key and value
    static constexpr size_t kStageBytes = 2 * size_t(kTile) * sizeof(bf16);
    static constexpr size_t kSmem = kQBytes + kNewBytes + kStages * kStageBytes;
    // After the last tile the stages hold each warp's output [kRows][kDim] and its row max and sum.
    static constexpr size_t kMergeBytes = (size_t(kWarps) * kRows * (kDim + 2) + kRows) * sizeof(float);
    static_assert(kMergeBytes <= kStages * kStageBytes, "the merge reuses the tile stages");
    static_assert(kDim - HD == 0 || kDim - HD == 8, "padding is one 16-byte piece per row");
};

// The workspace (workspace_bytes()): o_part [batch, n_heads, splits, head_dim] and lse_part
// [batch, n_heads, splits], one chunk's normalized output and log2-sum-exp, and chunk_tickets
// [batch, tiles], the chunks of a head tile done (reset to zero by the last). A head tile: the KV
// head and tile of query heads of a block, blockIdx.x, `tiles` of them (gridDim.x).
struct Params {
    ScaledRows qkv;
    const float *q_norm, *k_norm;
    const float2* rope;
    bf16 *k, *v;
    const int32_t* lengths;
    float* v_bound;  // [batch, n_kv_heads]: FP8 output only
    float *o_part, *lse_part;
    unsigned* chunk_tickets;
    bf16* values;
    uint8_t* fp8;
    float* row_scale;
    // Sizes and positions in 32 bits (the constructor checks that they fit): fewer instructions in a
    // kernel that is a latency chain at short contexts.
    int n_heads, n_kv_heads, group, head_tiles, max_ctx, window, chunk, splits;
    float eps;
    float score_scale;  // log2(e) / sqrt(head_dim): scores in the log2 domain, softmax by exp2
};

// The keys of sequence b, [lo, hi), and the chunks first..last that hold them. Every block of the
// sequence decides from this alone which chunks have a partial result.
struct KeySpan {
    int lo, hi, first, last;
};
__device__ __forceinline__ KeySpan key_span(int32_t length, int max_ctx, int window, int chunk) {
    // Clamped so that a wrong length cannot send the kernel outside the cache.
    const int len = min(max(length, 1), max_ctx);
    const int lo = window > 0 ? max(0, len - window) : 0;
    return {lo, len, lo / chunk, (len - 1) / chunk};
}

// 16 bytes global -> shared, bypassing L1; with fill false it reads nothing and writes zeros.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool fill) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(fill ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// The consumer warps' own barrier (named barrier 1), which the producer warp does not take part in.
__device__ __forceinline__ void consumer_sync() { asm volatile("bar.sync 1, %0;" ::"n"(kConsumers) : "memory"); }

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

// v as the cache stores it (BF16), back in float.
__device__ __forceinline__ float bf16_round(float v) { return __bfloat162float(__float2bfloat16(v)); }

__device__ __forceinline__ uint8_t to_e4m3(float v) { return __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3); }

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    const __nv_bfloat162 p = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&p);
}

// A head vector (head_dim HD) spread over a warp as RoPE pairs: lane i holds elements
// (i + 32 j, i + 32 j + HD / 2), j < kPer. A warp first loads everything its heads need (load_*),
// so that their loads share one memory latency, then finishes each head (finish_head).
template <int HD>
struct HeadPairs {
    static constexpr int kHalf = HD / 2, kPer = (kHalf + 31) / 32;
    float x[kPer] = {}, y[kPer] = {};
};

// Y[r, col + e] of the GEMM output for the lane's elements e.
template <int HD, bool F32>
__device__ __forceinline__ void load_pairs(HeadPairs<HD>& h, const ScaledRows& s, int64_t r, int64_t col, int lane) {
#pragma unroll
    for (int j = 0; j < HeadPairs<HD>::kPer; ++j) {
        const int i = lane + 32 * j;
        if (i >= HeadPairs<HD>::kHalf) break;
        h.x[j] = s.value<F32>(r, col + i);
        h.y[j] = s.value<F32>(r, col + i + HeadPairs<HD>::kHalf);
    }
}

// w[e] (a norm's weights) for the lane's elements e; 1 where w is null.
template <int HD>
__device__ __forceinline__ void load_pairs(HeadPairs<HD>& h, const float* w, int lane) {
#pragma unroll
    for (int j = 0; j < HeadPairs<HD>::kPer; ++j) {
        const int i = lane + 32 * j;
        if (i >= HeadPairs<HD>::kHalf) break;
        h.x[j] = w ? w[i] : 1.0f;
        h.y[j] = w ? w[i + HeadPairs<HD>::kHalf] : 1.0f;
    }
}

// The head RMS-normed with weights `norm` (when normed) and rotated by the lane's (cos, sin) pairs
// `rope` (when rotated), as BF16 into dst[0, HD) in shared memory and, when `also` is given, into
// also[0, HD) in device memory. (Flags, not pointers, so that the arrays stay in registers.)
template <int HD>
__device__ __forceinline__ void finish_head(HeadPairs<HD> h, bool normed, const HeadPairs<HD>& norm, bool rotated,
                                            const float2 (&rope)[HeadPairs<HD>::kPer], float eps, bf16* dst, bf16* also, int lane) {
    constexpr int kHalf = HeadPairs<HD>::kHalf, kPer = HeadPairs<HD>::kPer;
    if (normed) {
        float ss = 0.0f;
#pragma unroll
        for (int j = 0; j < kPer; ++j) ss += h.x[j] * h.x[j] + h.y[j] * h.y[j];
        for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(kFull, ss, o);
        const float inv = rsqrtf(ss / float(HD) + eps);
#pragma unroll
        for (int j = 0; j < kPer; ++j) {
            h.x[j] *= inv * norm.x[j];
            h.y[j] *= inv * norm.y[j];
        }
    }
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
        const int i = lane + 32 * j;
        if (i >= kHalf) break;
        float a = h.x[j], c = h.y[j];
        if (rotated) {
            const float ra = a * rope[j].x - c * rope[j].y, rc = c * rope[j].x + a * rope[j].y;
            a = ra;
            c = rc;
        }
        const bf16 ha = __float2bfloat16(a), hc = __float2bfloat16(c);
        dst[i] = ha;
        dst[i + kHalf] = hc;
        if (also) {
            also[i] = ha;
            also[i + kHalf] = hc;
        }
    }
}

// Outputs [i, i + N) of the attention output (i a multiple of N), as one vector store: BF16 values,
// or the FP8 codes of value / scale.
template <int N>
__device__ __forceinline__ void store_output(const Params& p, size_t i, const float (&v)[N], float scale) {
    static_assert(N == 4 || N == 8, "one 4- or 8-byte FP8 store, one 8- or 16-byte BF16 store");
    if (p.fp8) {
        uint32_t w[N / 4] = {};
#pragma unroll
        for (int j = 0; j < N; ++j) w[j / 4] |= uint32_t(to_e4m3(v[j] / scale)) << (8 * (j % 4));
        if constexpr (N == 4)
            *reinterpret_cast<uint32_t*>(p.fp8 + i) = w[0];
        else
            *reinterpret_cast<uint2*>(p.fp8 + i) = make_uint2(w[0], w[1]);
    } else {
        uint32_t w[N / 2];
#pragma unroll
        for (int j = 0; j < N / 2; ++j) w[j] = pack_bf16(v[2 * j], v[2 * j + 1]);
        if constexpr (N == 4)
            *reinterpret_cast<uint2*>(p.values + i) = make_uint2(w[0], w[1]);
        else
            *reinterpret_cast<uint4*>(p.values + i) = make_uint4(w[0], w[1], w[2], w[3]);
    }
}

// Block (head tile, sequence, chunk). The chunk varies slowest, so that the blocks of the first
// chunks, which hold keys at any length, are dispatched first and the blocks of chunks past a short
// length (which return at once) do not hold SM slots before them. Tiles of kKeys positions,
// aligned to the chunk start, stream through kStages shared-memory stages; warp w takes positions
// [16w, 16w + 16) of each tile with its own online softmax (m, l, o) for the 16 head rows, and the
// four warps' results are merged at the end. The new token's position p is zero-filled by the
// loads and receives the block's own new key and value once its tile has arrived.
//
// Fragments (PTX ISA, mma.m16n8k16): lane = 4 g + t holds rows g and g + 8 of the score and output
// tiles, columns 2t and 2t + 1 of each n8 piece. The two n8 score pieces of a warp's 16 keys are,
// packed to BF16, exactly the A fragment of the P V product (k = those 16 keys), so P never leaves
// registers.
//
// The combination. A sequence whose keys lie in one chunk has its head tile's output in the block
// that computed it. Otherwise each block writes its chunk's part, and the last of the chunks' blocks
// (a ticket per head tile and sequence; it resets the ticket) merges them: m' = max(m, lse_s),
// acc' = acc exp2(m - m') + o_s exp2(lse_s - m'), l' likewise with 1 for o_s; o = acc / l. BF16
// output is written then (take_ticket; the last block reads the others' writes past L1).
//
// The FP8 row scale. Every block of a row must quantize with the same scale, known before any has
// its output: each head's output is a convex combination of V rows (P rounded to BF16 sums to at
// most 1 + 2^-8), so |o[b, :]| <= (1 + 2^-7) bound_b with bound_b the largest |v| of the row's
// cache, which every block computes alike from v_bound (the largest so far of each KV head, kept
// up to date by the blocks that append) and the new values of all the row's KV heads. E4M3 is a
// floating-point format: a scale above the exact amax keeps every value's 3 mantissa bits as long
// as it stays above 2^-6 of the range, i.e. above 3.5e-5 of the bound. (A row-wide amax instead
// needs the row's blocks to finish first: a ticket and a second pass by the last block cost 4 us
// per layer at Qwen3-32B's shape on the H200, and a cluster of the row's head tiles, which could
// exchange it in shared memory, slowed the kernel 1.2-1.45x by constraining where blocks run.)
template <int HD, bool F32>
__global__ void __launch_bounds__(kThreads) decode_attention_kernel(Params p) {
    using L = Layout<HD>;
    constexpr int kDim = L::kDim, kStride = L::kStride;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16* qs = reinterpret_cast<bf16*>(smem);                                 // [kRows][kStride]
    bf16* news = reinterpret_cast<bf16*>(smem + L::kQBytes);                  // the new key (row 0) and value (row 1)
    bf16* stages = reinterpret_cast<bf16*>(smem + L::kQBytes + L::kNewBytes);  // stage s: K tile at 2 s kTile, V tile after it

    const int split = int(blockIdx.z), tile_id = int(blockIdx.x), kvh = tile_id / p.head_tiles, head_tile = tile_id % p.head_tiles, b = int(blockIdx.y);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
    const int h0 = kvh * p.group + head_tile * kRows;
    const int rows = min(kRows, p.group - head_tile * kRows);
    using Pairs = HeadPairs<HD>;
    constexpr int kRowsPerWarp = kRows / kWarps;
    // Stage s is filled when full[s] completes (the producer's 32 lanes arrive as their copies land)
    // and free again when empty[s] does (each consumer warp arrives once it is done with the tile).
    // Set up while the predecessor may still run: they touch no device memory.
    __shared__ uint64_t full[kStages], empty[kStages];
    if (tid == 0)
        for (int s = 0; s < kStages; ++s) {
            mbarrier_init(smem_u32(&full[s]), 32);
            mbarrier_init(smem_u32(&empty[s]), kWarps);
        }
    __syncthreads();
    wait_for_predecessor();  // the GEMM output and the lengths (launch.h)

    // What the block reads that does not depend on the sequence's length is loaded before the length
    // is used, with no branch and no use of a loaded value between the loads, so that all of them
    // share one memory latency: warp w's query heads w, w + kWarps, ... of the tile (past the group:
    // the last head again, unused), the new key (warp 0) and value (warp 1) of the KV head, the
    // norms' weights, and for FP8 output this thread's part of the row's bound. Loaded head by head
    // behind branches (or predicates), the SASS scaled each head before it issued the next head's
    // loads, and the bound's loads came after the heads were finished: about seven latencies in a
    // chain before the first tile. In one batch, Qwen3-32B's layer at batch 32 on the H200 took 10.8
    // instead of 12.2 us at length 1 (FP8 out), and the decode step's attention 0.46 instead of 0.53
    // ms at context 0 (bench/README.md).
    const int32_t length = p.lengths[b];
    Pairs q[kRowsPerWarp], q_norm, k_norm, fresh;
    if (warp < kWarps) {
#pragma unroll
        for (int i = 0; i < kRowsPerWarp; ++i) load_pairs<HD, F32>(q[i], p.qkv, b, (h0 + min(warp + i * kWarps, rows - 1)) * HD, lane);
        load_pairs<HD, F32>(fresh, p.qkv, b, (p.n_heads + (warp == 1 ? p.n_kv_heads : 0) + kvh) * HD, lane);
        load_pairs(q_norm, p.q_norm, lane);
        load_pairs(k_norm, p.k_norm, lane);
    }
    // The cache bounds of the first kConsumers KV heads are loaded here and taken in after the new
    // values, so that no use of a loaded value stands between two loads.
    const int row_bound = b * p.n_kv_heads;
    const float cache_bound = p.fp8 && tid < p.n_kv_heads ? __ldcg(p.v_bound + row_bound + tid) : 0.0f;
    float bound = 0.0f;
    if (p.fp8 && warp < kWarps) {
#pragma unroll 8
        for (int i = tid; i < p.n_kv_heads * HD; i += kConsumers)
            bound = fmaxf(bound, fabsf(bf16_round(p.qkv.value<F32>(b, (p.n_heads + p.n_kv_heads) * HD + i))));
        bound = fmaxf(bound, cache_bound);
        for (int i = tid + kConsumers; i < p.n_kv_heads; i += kConsumers) bound = fmaxf(bound, __ldcg(p.v_bound + row_bound + i));
    }

    const KeySpan span = key_span(length, p.max_ctx, p.window, p.chunk);
    if (split < span.first || split > span.last) return;  // no key in this chunk
    const int begin = max(split * p.chunk, span.lo), end = min((split + 1) * p.chunk, span.hi);
    const int pos = span.hi - 1;                       // the new token
    const bool has_new = split == span.last;          // its chunk
    const int cached_end = has_new ? pos : end;       // the keys read from the cache: [begin, cached_end)
    const int tile0 = begin / kKeys * kKeys;
    const int n_tiles = (end - tile0 + kKeys - 1) / kKeys;

    const size_t kv_base = size_t(b * p.n_kv_heads + kvh) * size_t(p.max_ctx) * HD;
    const bf16* kg = p.k + kv_base;
    const bf16* vg = p.v + kv_base;

    // The producer: tile t into stage t % kStages as soon as the consumers have freed it, row r of
    // the tile being position tile0 + kKeys t + r, zero outside [begin, cached_end) (so that
    // neither garbage past len nor keys before the window reach the products). Every stage stays in
    // flight while the consumers work on an earlier one.
    if (warp == kProducer) {
        constexpr int kPieces = HD / 8;  // 16-byte pieces per row
        constexpr int kPasses = (kKeys * kPieces + 31) / 32;
        for (int t = 0; t < n_tiles; ++t) {
            const int s = t % kStages;
            if (t >= kStages) mbarrier_wait(smem_u32(&empty[s]), uint32_t(t / kStages - 1) & 1u);
            bf16* ks = stages + s * 2 * L::kTile;
            bf16* vs = ks + L::kTile;
            const int key0 = tile0 + t * kKeys;
#pragma unroll
            for (int j = 0; j < kPasses; ++j) {
                const int i = lane + j * 32;
                if (kKeys * kPieces % 32 != 0 && i >= kKeys * kPieces) break;
                const int r = i / kPieces, c = i % kPieces * 8;
                const int key = key0 + r;
                const bool in = key >= begin && key < cached_end;
                const int off = (in ? key : begin) * HD + c;
                cp_async_16(smem_u32(ks + r * kStride + c), kg + off, in);
                cp_async_16(smem_u32(vs + r * kStride + c), vg + off, in);
            }
            mbarrier_arrive_on_cp_async(smem_u32(&full[s]));
        }
        cp_async_wait_all();
        return;
    }

    if constexpr (HD < kDim) {  // the padding columns of Q and of every K and V tile, which nothing else writes
        for (int i = tid; i < kRows; i += kConsumers) *reinterpret_cast<uint4*>(qs + i * kStride + HD) = make_uint4(0, 0, 0, 0);
        for (int i = tid; i < kStages * 2 * kKeys; i += kConsumers) *reinterpret_cast<uint4*>(stages + i * kStride + HD) = make_uint4(0, 0, 0, 0);
    }
    // Warp w: query heads w, w + kWarps, ... of the tile (zero rows past the group), and warps 0 and
    // 1 the new key and value of the chunk that holds the new token, which the first head tile also
    // appends to the cache.
    {
        float2 rope[Pairs::kPer] = {};
        const bool fresh_key = has_new && warp == 0, fresh_value = has_new && warp == 1;
        if (p.rope)
#pragma unroll
            for (int j = 0; j < Pairs::kPer; ++j)
                if (lane + 32 * j < Pairs::kHalf) rope[j] = p.rope[pos * Pairs::kHalf + lane + 32 * j];
#pragma unroll
        for (int i = 0; i < kRowsPerWarp; ++i) {
            const int r = warp + i * kWarps;
            if (r < rows)
                finish_head<HD>(q[i], p.q_norm, q_norm, p.rope, rope, p.eps, qs + r * kStride, nullptr, lane);
            else
                for (int c = lane; c < HD; c += 32) qs[r * kStride + c] = __float2bfloat16(0.0f);
        }
        const size_t at = kv_base + size_t(pos) * HD;
        const bool append = head_tile == 0;
        if (fresh_key) finish_head<HD>(fresh, p.k_norm, k_norm, p.rope, rope, p.eps, news, append ? p.k + at : nullptr, lane);
        if (fresh_value) finish_head<HD>(fresh, false, k_norm, false, rope, p.eps, news + kStride, append ? p.v + at : nullptr, lane);
        if (fresh_value && append && p.fp8) {  // raise the KV head's bound by its new value (as stored: BF16)
            float m = 0.0f;
#pragma unroll
            for (int j = 0; j < Pairs::kPer; ++j)
                if (lane + 32 * j < Pairs::kHalf)
                    m = fmaxf(m, fmaxf(fabsf(bf16_round(fresh.x[j])), fabsf(bf16_round(fresh.y[j]))));
            for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(kFull, m, off));
            if (lane == 0) atomicMax(reinterpret_cast<unsigned*>(p.v_bound + b * p.n_kv_heads + kvh), __float_as_uint(m));
        }
    }

    // FP8: the row's bound, from the threads' parts loaded above.
    __shared__ float warp_bound[kWarps];
    if (p.fp8) {
        for (int off = 16; off > 0; off /= 2) bound = fmaxf(bound, __shfl_xor_sync(kFull, bound, off));
        if (lane == 0) warp_bound[warp] = bound;
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

    consumer_sync();  // Q and the new key and value visible to every consumer warp
    // Each warp reads only its own 16 rows of a tile's K and V, so after the wait for a tile it
    // syncs with no other warp, and it frees the stage for the producer once it is done with it.
    for (int t = 0; t < n_tiles; ++t) {
        const int stage = t % kStages;
        mbarrier_wait(smem_u32(&full[stage]), uint32_t(t / kStages) & 1u);
        bf16* ks = stages + stage * 2 * L::kTile;
        bf16* vs = ks + L::kTile;
        const int new_row = has_new && t == n_tiles - 1 ? pos - (tile0 + t * kKeys) : -1;
        if (new_row >= 0 && new_row / 16 == warp) {  // the new token's row, zero-filled by the loads, is this warp's
            for (int i = lane; i < 2 * (HD / 8); i += 32) {
                const int which = i / (HD / 8), c = i % (HD / 8) * 8;
                bf16* dst = (which == 0 ? ks : vs) + new_row * kStride + c;
                *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(news + which * kStride + c);
            }
            __syncwarp();
        }

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
        const int key = tile0 + t * kKeys + warp * 16 + 2 * t4;
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int kj = key + 8 * j + (e & 1);
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
        __syncwarp();  // every lane's reads of the stage are done
        if (lane == 0) mbarrier_arrive(smem_u32(&empty[stage]));
    }

    allow_dependents();  // this block streams no more: a dependent kernel may take SM slots

    // Merge the warps: o = sum_w f_w o_w, f_w = exp2(m_w - M) / sum_w' l_w' exp2(m_w' - M), M =
    // max_w m_w (finite: the chunk holds a key, and every row sees every key). A warp that saw no key
    // has m_w = -inf and o_w = 0. The factors are computed once per row; then each thread sums 8
    // consecutive outputs of a head from vector loads and writes them as one vector store. (With an
    // element a thread, each recomputing its row's factors, and 64-bit positions, a warp executed
    // 2651 instructions at context 0 against 1974 now, and the kernel took 10.8 against 10.3 us:
    // Nsight Compute on the H200, Qwen3-32B at batch 32; bench/README.md.)
    consumer_sync();  // every warp is done with the stages (every tile's copies landed before its wait returned)
    float* mo = reinterpret_cast<float*>(stages);  // [kWarps][kRows][kDim]
    float* mm = mo + kWarps * kRows * kDim;        // [kWarps][kRows]: m_w
    float* mf = mm + kWarps * kRows;               // [kWarps][kRows]: l_w, then f_w
    float* lse = mf + kWarps * kRows;              // [kRows]: the chunk's log2-sum-exp, M + log2(sum_w l_w exp2(m_w - M))
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        l[i] += __shfl_xor_sync(kFull, l[i], 1);
        l[i] += __shfl_xor_sync(kFull, l[i], 2);
    }
    float* wo = mo + warp * kRows * kDim;
#pragma unroll
    for (int n = 0; n < kDim / 8; ++n) {
        *reinterpret_cast<float2*>(wo + g * kDim + 8 * n + 2 * t4) = make_float2(o[n][0], o[n][1]);
        *reinterpret_cast<float2*>(wo + (g + 8) * kDim + 8 * n + 2 * t4) = make_float2(o[n][2], o[n][3]);
    }
    if (t4 == 0) {
        mm[warp * kRows + g] = m[0];
        mm[warp * kRows + g + 8] = m[1];
        mf[warp * kRows + g] = l[0];
        mf[warp * kRows + g + 8] = l[1];
    }
    consumer_sync();
    if (tid < kRows) {
        float mmax = -INFINITY, sum = 0.0f, f[kWarps];
#pragma unroll
        for (int w = 0; w < kWarps; ++w) mmax = fmaxf(mmax, mm[w * kRows + tid]);
#pragma unroll
        for (int w = 0; w < kWarps; ++w) {
            f[w] = exp2f(mm[w * kRows + tid] - mmax);
            sum += mf[w * kRows + tid] * f[w];
        }
#pragma unroll
        for (int w = 0; w < kWarps; ++w) mf[w * kRows + tid] = f[w] / sum;
        lse[tid] = mmax + log2f(sum);
    }
    consumer_sync();

    // The head tile's final output, element d of head h0 + r, as BF16 or as FP8 codes of the row
    // scale (written by the first head tile's final block).
    const size_t width = size_t(p.n_heads) * HD;
    float scale = 1.0f;
    if (p.fp8) {
        float bound = 0.0f;
        for (int w = 0; w < kWarps; ++w) bound = fmaxf(bound, warp_bound[w]);
        scale = bound > 0.0f ? bound * (1.0f + 1.0f / 128.0f) / kE4M3Max : 1.0f;
    }
    const bool one_chunk = span.first == span.last;
    constexpr int kVec = 8;  // outputs of an item (head dims are multiples of 8)
    for (int item = tid; item < rows * (HD / kVec); item += kConsumers) {
        const int r = item / (HD / kVec), d = item % (HD / kVec) * kVec;
        float acc[kVec] = {};
#pragma unroll
        for (int w = 0; w < kWarps; ++w) {
            const float f = mf[w * kRows + r];
            const float4* src = reinterpret_cast<const float4*>(mo + (w * kRows + r) * kDim + d);
            const float4 lo = src[0], hi = src[1];
            acc[0] += f * lo.x, acc[1] += f * lo.y, acc[2] += f * lo.z, acc[3] += f * lo.w;
            acc[4] += f * hi.x, acc[5] += f * hi.y, acc[6] += f * hi.z, acc[7] += f * hi.w;
        }
        if (one_chunk) {
            store_output(p, size_t(b) * width + size_t(h0 + r) * HD + d, acc, scale);
        } else {
            const size_t part = (size_t(b) * p.n_heads + h0 + r) * p.splits + split;
            float4* dst = reinterpret_cast<float4*>(p.o_part + part * HD + d);
            dst[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
            dst[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
            if (d == 0) p.lse_part[part] = lse[r];
        }
    }
    if (!one_chunk) {
        if (!take_ticket(p.chunk_tickets + b * gridDim.x + tile_id, unsigned(span.last - span.first + 1), consumer_sync)) return;
        // Four consecutive outputs of a head per item; the loads of successive chunks do not depend
        // on one another.
        for (int item = tid; item < rows * HD / 4; item += kConsumers) {
            const int r = item * 4 / HD, d = item * 4 % HD;
            const size_t head = size_t(b) * p.n_heads + h0 + r;
            const float* part_lse = p.lse_part + head * p.splits;
            const float4* part = reinterpret_cast<const float4*>(p.o_part + head * p.splits * HD + d);
            float mx = -INFINITY, sum = 0.0f;
            float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 4
            for (int c = span.first; c <= span.last; ++c) {
                const float e = __ldcg(part_lse + c);  // finite: the chunk holds a key
                const float4 v = __ldcg(part + c * HD / 4);
                const float m_new = fmaxf(mx, e), f = exp2f(mx - m_new), w = exp2f(e - m_new);
                sum = sum * f + w;
                acc = make_float4(acc.x * f + w * v.x, acc.y * f + w * v.y, acc.z * f + w * v.z, acc.w * f + w * v.w);
                mx = m_new;
            }
            const float out[4] = {acc.x / sum, acc.y / sum, acc.z / sum, acc.w / sum};
            store_output(p, size_t(b) * width + size_t(h0 + r) * HD + d, out, scale);
        }
    }
    if (p.fp8 && tile_id == 0 && tid == 0) p.row_scale[b] = scale;
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

// The workspace's parts (Params), in floats: the float4-read ones first (multiples of head_dim).
struct WorkspaceParts {
    int64_t o_part, lse_part, chunk_tickets, total;
};
WorkspaceParts workspace_parts(const DecodeAttentionShape& s, int64_t splits, int64_t head_tiles) {
    WorkspaceParts w{};
    const int64_t tiles = s.batch * s.n_kv_heads * head_tiles;
    w.o_part = 0;
    w.lse_part = w.o_part + s.batch * s.n_heads * splits * s.head_dim;
    w.chunk_tickets = w.lse_part + s.batch * s.n_heads * splits;
    w.total = w.chunk_tickets + tiles;
    return w;
}

}  // namespace

int64_t decode_attention_chunk(int64_t max_ctx, int64_t units, int64_t slots) {
    const int64_t whole = ceil_div(max_ctx, kKeys) * kKeys;
    int64_t best = whole, best_cost = INT64_MAX;
    for (int64_t want = 1; want <= kMaxSplits; ++want) {
        const int64_t chunk = std::min(whole, std::max(kMinChunk, ceil_div(ceil_div(max_ctx, want), kKeys) * kKeys));
        const int64_t cost = ceil_div(units * ceil_div(max_ctx, chunk), slots) * (chunk + kBlockCost);  // at most `want` chunks
        if (cost < best_cost) best = chunk, best_cost = cost;  // ties keep the fewer chunks
    }
    return best;
}

DecodeAttention::DecodeAttention(const DecodeAttentionShape& shape, const cudaDeviceProp& props) : shape_(shape) {
    const DecodeAttentionShape& s = shape_;
    const std::string what = describe(s);
    SPENSE_CHECK(s.batch >= 1 && s.batch <= 65535, what, ": batch must lie in [1, 65535]");
    SPENSE_CHECK(s.n_heads >= 1 && s.n_kv_heads >= 1 && s.n_heads % s.n_kv_heads == 0, what,
                 ": n_heads must be a positive multiple of n_kv_heads");
    SPENSE_CHECK(supported_head_dim(s.head_dim), what, ": head_dim must be 8, 16, 32, 64, 128 or 256");
    SPENSE_CHECK(s.max_ctx >= 1, what, ": max_ctx must be >= 1");
    SPENSE_CHECK(s.max_ctx * s.head_dim <= INT_MAX && (s.n_heads + 2 * s.n_kv_heads) * s.head_dim <= INT_MAX, what,
                 ": a sequence's cache or a row of the q|k|v output exceeds 2^31 elements");
    SPENSE_CHECK(s.window >= 0, what, ": window must be >= 0 (0: full causal)");
    SPENSE_CHECK(s.chunk >= 0 && s.chunk % kKeys == 0, what, ": chunk ", s.chunk, " must be a multiple of ", kKeys, " (0: automatic)");
    head_tiles_ = ceil_div(s.n_heads / s.n_kv_heads, kRows);

    int64_t slots = 0;
    with_head_dim(s.head_dim, [&](auto hd) {
        constexpr int HD = decltype(hd)::value;
        smem_ = Layout<HD>::kSmem;
        SPENSE_CHECK(smem_ <= props.sharedMemPerBlockOptin, what, ": needs ", smem_, " bytes of shared memory per block, the GPU has ",
                     props.sharedMemPerBlockOptin);
        int per_sm = INT_MAX;  // of the instance for either type of GEMM products
        for (auto kernel : {decode_attention_kernel<HD, false>, decode_attention_kernel<HD, true>}) {
            SPENSE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_)), what);
            int blocks = 0;
            SPENSE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, smem_), what);
            per_sm = std::min(per_sm, blocks);
        }
        slots = int64_t(std::max(per_sm, 1)) * props.multiProcessorCount;
    });
    chunk_ = s.chunk > 0 ? s.chunk : decode_attention_chunk(s.max_ctx, s.batch * s.n_kv_heads * head_tiles_, slots);
    splits_ = ceil_div(s.max_ctx, chunk_);
    SPENSE_CHECK(splits_ <= 65535, what, ": ", splits_, " chunks of ", chunk_, " exceed the grid (use a larger chunk)");
}

size_t DecodeAttention::workspace_bytes() const { return size_t(workspace_parts(shape_, splits_, head_tiles_).total) * sizeof(float); }

void DecodeAttention::run(const Input& in, bf16* k, bf16* v, float* v_bound, const int32_t* lengths, const Output& out, void* workspace,
                          cudaStream_t stream) const {
    const DecodeAttentionShape& s = shape_;
    const auto aligned = [](const void* ptr, uintptr_t a) { return reinterpret_cast<uintptr_t>(ptr) % a == 0; };
    SPENSE_CHECK(in.qkv.raw && in.qkv.ld >= (s.n_heads + 2 * s.n_kv_heads) * s.head_dim, describe(s),
                 ": the q|k|v GEMM output must be given, with rows of at least (n_heads + 2 n_kv_heads) head_dim elements");
    SPENSE_CHECK(in.qkv.parts.count == 1, describe(s), ": the q|k|v GEMM output must be one product, got ", in.qkv.parts.count, " parts");
    SPENSE_CHECK(k && v && lengths && aligned(k, 16) && aligned(v, 16), describe(s), ": the caches and lengths must be given, the caches 16-byte aligned");
    SPENSE_CHECK(out.fp8 ? out.row_scale != nullptr && v_bound != nullptr : out.values != nullptr, describe(s),
                 ": the output needs BF16 values, or FP8 codes, row scales and the V bounds");
    SPENSE_CHECK(aligned(out.fp8 ? static_cast<const void*>(out.fp8) : out.values, 16), describe(s), ": the output must be 16-byte aligned");
    SPENSE_CHECK(workspace && aligned(workspace, 16), describe(s), ": the workspace must be given, 16-byte aligned");

    const WorkspaceParts w = workspace_parts(s, splits_, head_tiles_);
    float* ws = static_cast<float*>(workspace);
    const Params params{in.qkv,
                        in.q_norm,
                        in.k_norm,
                        in.rope,
                        k,
                        v,
                        lengths,
                        v_bound,
                        ws + w.o_part,
                        ws + w.lse_part,
                        reinterpret_cast<unsigned*>(ws + w.chunk_tickets),
                        out.values,
                        out.fp8,
                        out.row_scale,
                        int(s.n_heads),
                        int(s.n_kv_heads),
                        int(s.n_heads / s.n_kv_heads),
                        int(head_tiles_),
                        int(s.max_ctx),
                        int(s.window),
                        int(chunk_),
                        int(splits_),
                        in.eps,
                        float(1.4426950408889634 / std::sqrt(double(s.head_dim)))};
    const dim3 grid(unsigned(s.n_kv_heads * head_tiles_), unsigned(s.batch), unsigned(splits_));
    with_head_dim(s.head_dim, [&](auto hd) {
        with_product_type(in.qkv, [&](auto f32) {
            SPENSE_CUDA_CHECK(launch_pdl(decode_attention_kernel<hd, f32>, LaunchShape{grid, dim3(kThreads), smem_}, stream, params), describe(s),
                              ": ", splits_, " chunks of ", chunk_);
        });
    });
}

}  // namespace spense::gpu
