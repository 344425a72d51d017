#include "gpu/layer_forward.h"

#include <cmath>

#include "gpu/check.h"

namespace spense::gpu {

namespace {

constexpr unsigned kFull = 0xffffffffu;

int blocks_for(int64_t n, int threads) { return int((n + threads - 1) / threads); }

// Sum over a block of 256 threads in a fixed tree (the same order every run).
__device__ double block_sum(double v, double* shared) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
    if ((threadIdx.x & 31) == 0) shared[threadIdx.x >> 5] = v;
    __syncthreads();
    double s = 0;
    for (int w = 0; w < int(blockDim.x >> 5); ++w) s += shared[w];
    __syncthreads();
    return s;
}

__global__ void rms_norm_kernel(const float* x, const float* w, float* y, int64_t cols, double eps) {
    __shared__ double shared[32];
    const float* in = x + int64_t(blockIdx.x) * cols;
    float* out = y + int64_t(blockIdx.x) * cols;
    double ss = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) ss += double(in[c]) * in[c];
    ss = block_sum(ss, shared);
    const float inv = float(1.0 / sqrt(ss / double(cols) + eps));
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) out[c] = in[c] * inv * w[c];
}

// One warp per (row, head).
__global__ void head_rms_norm_kernel(float* x, const float* w, int64_t rows, int64_t heads, int64_t hd, double eps) {
    const int64_t item = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x & 31;
    if (item >= rows * heads) return;
    float* v = x + item * hd;
    double ss = 0;
    for (int64_t i = lane; i < hd; i += 32) ss += double(v[i]) * v[i];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(kFull, ss, o);
    const float inv = float(1.0 / sqrt(ss / double(hd) + eps));
    for (int64_t i = lane; i < hd; i += 32) v[i] = v[i] * inv * w[i];
}

__global__ void rope_kernel(float* x, const float* cos_t, const float* sin_t, int64_t rows, int64_t cols, int64_t hd, int64_t T) {
    const int64_t half = hd / 2, pairs = cols / 2;
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= rows * pairs) return;
    const int64_t r = i / pairs, p = i % pairs, head = p / half, k = p % half;
    const float c = cos_t[(r % T) * half + k], s = sin_t[(r % T) * half + k];
    float* v = x + r * cols + head * hd;
    const float a = v[k], b = v[k + half];
    v[k] = a * c - b * s;
    v[k + half] = b * c + a * s;
}

__global__ void add_bias_kernel(float* y, const float* b, int64_t rows, int64_t cols) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < rows * cols) y[i] += b[i % cols];
}

__global__ void swiglu_kernel(float* g, const float* u, int64_t n) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float v = g[i];
    g[i] = v / (1.0f + expf(-v)) * u[i];
}

__global__ void add_kernel(float* x, const float* y, int64_t n) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

__global__ void row_diff_norms_kernel(const float* a, const float* b, int64_t cols, double* partial) {
    __shared__ double shared[32];
    const int64_t r = blockIdx.x;
    double d = 0, n = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
        const double e = double(a[r * cols + c]) - b[r * cols + c];
        d += e * e;
        n += double(b[r * cols + c]) * b[r * cols + c];
    }
    d = block_sum(d, shared);
    n = block_sum(n, shared);
    if (threadIdx.x == 0) {
        partial[2 * r] = d;
        partial[2 * r + 1] = n;
    }
}

// Flash-attention style, in float32: a CTA of 128 threads takes BQ = 64 queries of one (sample,
// head); thread t owns query row t / 2 and half t % 2 of each key tile's BK = 32 scores and of the
// output dimensions (dims 2i + half, interleaved so that the two halves read different banks).
// Per key tile: scores from Q and K in shared memory, running max m and sum l per row, the
// output rescaled by exp(m_old - m_new) and P V added.
constexpr int BQ = 64, BK = 32, kThreads = 128;

template <int HD>
__global__ void __launch_bounds__(kThreads) attention_kernel(const float* q, const float* k, const float* v, float* o, AttentionShape s,
                                                             float scale) {
    extern __shared__ float smem[];
    float* qs = smem;                  // [BQ][HD + 1]
    float* ks = qs + BQ * (HD + 1);    // [BK][HD + 1]
    float* vs = ks + BK * (HD + 1);    // [BK][HD]
    float* ps = vs + BK * HD;          // [BQ][BK + 1]
    const int64_t hd = s.head_dim, T = s.T;
    const int64_t q0 = int64_t(blockIdx.x) * BQ, head = blockIdx.y, sample = blockIdx.z;
    const int64_t kvh = head / (s.heads / s.kv_heads);
    const int64_t q_stride = s.heads * hd, kv_stride = s.kv_heads * hd;
    const float* qb = q + sample * T * q_stride + head * hd;
    const float* kb = k + sample * T * kv_stride + kvh * hd;
    const float* vb = v + sample * T * kv_stride + kvh * hd;
    const int row = threadIdx.x >> 1, half = threadIdx.x & 1;

    for (int i = threadIdx.x; i < BQ * HD; i += kThreads) {
        const int r = i / HD, d = i % HD;
        qs[r * (HD + 1) + d] = q0 + r < T && d < hd ? qb[(q0 + r) * q_stride + d] : 0.0f;
    }
    constexpr int kOut = HD / 2;
    float acc[kOut];
    for (int i = 0; i < kOut; ++i) acc[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    const int64_t query = q0 + row;
    const int64_t key_lo = s.window > 0 ? max(int64_t(0), q0 - s.window + 1) / BK * BK : 0;
    const int64_t key_hi = min(T, q0 + BQ);

    for (int64_t k0 = key_lo; k0 < key_hi; k0 += BK) {
        __syncthreads();  // the previous tile's K, V and P are consumed
        for (int i = threadIdx.x; i < BK * HD; i += kThreads) {
            const int r = i / HD, d = i % HD;
            const bool in = k0 + r < T && d < hd;
            ks[r * (HD + 1) + d] = in ? kb[(k0 + r) * kv_stride + d] : 0.0f;
            vs[r * HD + d] = in ? vb[(k0 + r) * kv_stride + d] : 0.0f;
        }
        __syncthreads();
        constexpr int kKeys = BK / 2;
        float sc[kKeys];
        for (int j = 0; j < kKeys; ++j) sc[j] = 0.0f;
        for (int d = 0; d < hd; ++d) {
            const float qd = qs[row * (HD + 1) + d];
#pragma unroll
            for (int j = 0; j < kKeys; ++j) sc[j] += qd * ks[(half * kKeys + j) * (HD + 1) + d];
        }
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < kKeys; ++j) {
            const int64_t key = k0 + half * kKeys + j;
            const bool valid = key <= query && key < T && (s.window <= 0 || key > query - s.window);
            sc[j] = valid ? sc[j] * scale : -INFINITY;
            tile_max = fmaxf(tile_max, sc[j]);
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(kFull, tile_max, 1));
        const float m_new = fmaxf(m, tile_max);
        float tile_sum = 0.0f;
#pragma unroll
        for (int j = 0; j < kKeys; ++j) {
            const float p = m_new == -INFINITY ? 0.0f : expf(sc[j] - m_new);
            ps[row * (BK + 1) + half * kKeys + j] = p;
            tile_sum += p;
        }
        tile_sum += __shfl_xor_sync(kFull, tile_sum, 1);
        const float corr = m == -INFINITY ? 0.0f : expf(m - m_new);
        l = l * corr + tile_sum;
        m = m_new;
#pragma unroll
        for (int i = 0; i < kOut; ++i) acc[i] *= corr;
        __syncwarp();
        for (int j = 0; j < BK; ++j) {
            const float p = ps[row * (BK + 1) + j];
#pragma unroll
            for (int i = 0; i < kOut; ++i) acc[i] += p * vs[j * HD + 2 * i + half];
        }
    }
    if (query >= T) return;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    float* ob = o + (sample * T + query) * q_stride + head * hd;
#pragma unroll
    for (int i = 0; i < kOut; ++i)
        if (2 * i + half < hd) ob[2 * i + half] = acc[i] * inv;
}

template <int HD>
void attention(const float* q, const float* k, const float* v, float* o, const AttentionShape& s, cudaStream_t stream) {
    const size_t smem = sizeof(float) * (BQ * (HD + 1) + BK * (HD + 1) + BK * HD + BQ * (BK + 1));
    static bool configured = false;
    if (!configured) {
        SPENSE_CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
                          "attention kernel, head dim ", HD);
        configured = true;
    }
    const dim3 grid(unsigned((s.T + BQ - 1) / BQ), unsigned(s.heads), unsigned(s.samples));
    attention_kernel<HD><<<grid, kThreads, smem, stream>>>(q, k, v, o, s, float(1.0 / std::sqrt(double(s.head_dim))));
    SPENSE_CUDA_CHECK(cudaGetLastError(), "attention: ", s.samples, " x ", s.T, " tokens, ", s.heads, " heads of ", s.head_dim);
}

}  // namespace

void launch_rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t cols, double eps, cudaStream_t stream) {
    if (rows == 0) return;
    rms_norm_kernel<<<unsigned(rows), 256, 0, stream>>>(x, w, y, cols, eps);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "rms_norm [", rows, ", ", cols, "]");
}

void launch_head_rms_norm(float* x, const float* w, int64_t rows, int64_t cols, int64_t head_dim, double eps, cudaStream_t stream) {
    const int64_t items = rows * (cols / head_dim);
    head_rms_norm_kernel<<<blocks_for(items * 32, 256), 256, 0, stream>>>(x, w, rows, cols / head_dim, head_dim, eps);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "head_rms_norm [", rows, ", ", cols, "]");
}

void launch_rope(float* x, const float* cos, const float* sin, int64_t rows, int64_t cols, int64_t head_dim, int64_t T,
                 cudaStream_t stream) {
    rope_kernel<<<blocks_for(rows * cols / 2, 256), 256, 0, stream>>>(x, cos, sin, rows, cols, head_dim, T);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "rope [", rows, ", ", cols, "]");
}

void launch_add_bias(float* y, const float* b, int64_t rows, int64_t cols, cudaStream_t stream) {
    add_bias_kernel<<<blocks_for(rows * cols, 256), 256, 0, stream>>>(y, b, rows, cols);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "add_bias [", rows, ", ", cols, "]");
}

void launch_swiglu(float* g, const float* u, int64_t n, cudaStream_t stream) {
    swiglu_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(g, u, n);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "swiglu of ", n);
}

void launch_add(float* x, const float* y, int64_t n, cudaStream_t stream) {
    add_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(x, y, n);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "add of ", n);
}

void launch_row_diff_norms(const float* a, const float* b, int64_t rows, int64_t cols, double* partial, cudaStream_t stream) {
    if (rows == 0) return;
    row_diff_norms_kernel<<<unsigned(rows), 256, 0, stream>>>(a, b, cols, partial);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "row_diff_norms [", rows, ", ", cols, "]");
}

void launch_attention(const float* q, const float* k, const float* v, float* o, const AttentionShape& s, cudaStream_t stream) {
    SPENSE_CHECK(s.head_dim > 0 && s.head_dim <= 256 && s.kv_heads > 0 && s.heads % s.kv_heads == 0, "GPU attention: head dim ",
                 s.head_dim, " (at most 256), ", s.heads, " heads over ", s.kv_heads, " KV heads");
    if (s.samples == 0 || s.T == 0) return;
    if (s.head_dim <= 32) attention<32>(q, k, v, o, s, stream);
    else if (s.head_dim <= 64) attention<64>(q, k, v, o, s, stream);
    else if (s.head_dim <= 128) attention<128>(q, k, v, o, s, stream);
    else attention<256>(q, k, v, o, s, stream);
}

}  // namespace spense::gpu
