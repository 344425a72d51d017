#include "gpu/prune_kernels.h"

#include <cub/device/device_radix_sort.cuh>

#include <cmath>

#include "gpu/check.h"

namespace spense::gpu {

namespace {

constexpr unsigned kFull = 0xffffffffu;

int blocks_for(int64_t n, int threads) { return int((n + threads - 1) / threads); }

__global__ void add_lower_f64_kernel(const float* batch, double* sum, int64_t dim) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= dim * dim) return;
    if (i / dim >= i % dim) sum[i] += double(batch[i]);
}

// 32x32 tiles through shared memory, so that reading the mirrored triangle stays coalesced.
__global__ void finalize_hessian_kernel(const double* sum, double* h, int64_t dim, double scale) {
    __shared__ double tile[32][33];
    const int64_t r0 = int64_t(blockIdx.y) * 32, c0 = int64_t(blockIdx.x) * 32;
    // Load the tile at (max block, min block): the lower-triangle block that holds this one's values.
    const bool lower = r0 >= c0;
    const int64_t br = lower ? r0 : c0, bc = lower ? c0 : r0;
    for (int y = threadIdx.y; y < 32; y += blockDim.y) {
        const int64_t r = br + y, c = bc + threadIdx.x;
        tile[y][threadIdx.x] = r < dim && c < dim ? sum[r * dim + c] : 0.0;
    }
    __syncthreads();
    for (int y = threadIdx.y; y < 32; y += blockDim.y) {
        const int64_t r = r0 + y, c = c0 + threadIdx.x;
        if (r >= dim || c >= dim) continue;
        // Element (r, c) lives at lower position (max, min): in a diagonal block, (r < c) reads
        // the transposed tile entry, as does every entry of an upper block.
        const double v = lower && r >= c ? tile[y][threadIdx.x] : tile[threadIdx.x][y];
        h[r * dim + c] = scale * v;
    }
}

// out[j] (+)= sum_r x[r, j]^2 in float64, one thread per column (reads coalesce across a warp).
__global__ void column_sq_sums_kernel(const float* x, int64_t rows, int64_t cols, double* out, bool accumulate) {
    const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    double s = 0;
    for (int64_t r = 0; r < rows; ++r) {
        const double v = x[r * cols + j];
        s += v * v;
    }
    out[j] = accumulate ? out[j] + s : s;
}

template <typename T>
__device__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
    return v;
}

__global__ void row_weighted_sq_sums_kernel(const float* w, int64_t rows, int64_t cols, const double* c, double* out) {
    const int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    double s = 0;
    for (int64_t j = lane; j < cols; j += 32) {
        const double v = w[r * cols + j];
        s += v * v * c[j];
    }
    s = warp_sum(s);
    if (lane == 0) out[r] = s;
}

__global__ void zero_columns_kernel(float* w, int64_t rows, int64_t cols, const uint8_t* dead) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < rows * cols && dead[i % cols]) w[i] = 0.0f;
}

__global__ void f64_to_f32_kernel(const double* src, float* dst, int64_t n) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = float(src[i]);
}

__global__ void diff_f64_kernel(const float* a, const float* b, double* d, int64_t n) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) d[i] = b ? double(a[i]) - double(b[i]) : double(a[i]);
}

__global__ void row_dots_f64_kernel(const double* a, const double* b, int64_t rows, int64_t cols, double* out) {
    const int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    double s = 0;
    for (int64_t j = lane; j < cols; j += 32) s += a[r * cols + j] * b[r * cols + j];
    s = warp_sum(s);
    if (lane == 0) out[r] = s;
}

// Registers hold 4 consecutive block columns per lane: lane l owns columns 4l..4l+3.
__device__ float pick(const float (&v)[4], int k) { return k == 0 ? v[0] : k == 1 ? v[1] : k == 2 ? v[2] : v[3]; }
__device__ bool pick(const bool (&v)[4], int k) { return k == 0 ? v[0] : k == 1 ? v[1] : k == 2 ? v[2] : v[3]; }

constexpr int kBlockWarps = 8;
constexpr int kMaxBlock = 128;

__global__ void __launch_bounds__(kBlockWarps * 32) sparsegpt_block_kernel(SparseGptBlock a) {
    extern __shared__ float us[];  // us[t * count + s] = U[i1 + t, i1 + s]
    const int count = int(a.count), lane = threadIdx.x & 31;
    for (int i = threadIdx.x; i < count * count; i += blockDim.x)
        us[i] = a.u[(a.i1 + i / count) * a.cols + a.i1 + i % count];
    __syncthreads();
    const int64_t row = int64_t(blockIdx.x) * kBlockWarps + (threadIdx.x >> 5);
    if (row >= a.rows) return;
    float* wrow = a.w + row * a.cols;
    uint8_t* prow = a.pruned + row * a.cols;

    float w[4], e[4];
    bool p[4];
    for (int k = 0; k < 4; ++k) {
        const int j = lane * 4 + k;
        w[k] = j < count ? wrow[a.i1 + j] : 0.0f;
        p[k] = j < count && prow[a.i1 + j];
        e[k] = 0.0f;
    }
    for (int j = 0; j < count; ++j) {
        const int64_t col = a.i1 + j;
        if (const int g = a.group_at[col]; g >= 0) {
            float s[4];
            int64_t c[4];
            for (int k = 0; k < 4; ++k) {
                c[k] = a.groups[4 * g + k];
                float v;
                if (c[k] < a.i1 + count) {
                    const int jj = int(c[k] - a.i1);
                    v = __shfl_sync(kFull, pick(w, jj & 3), jj >> 2);
                } else {
                    // Beyond the block: the pending updates of this block's columns before j.
                    float part = 0.0f;
                    for (int kk = 0; kk < 4; ++kk)
                        if (lane * 4 + kk < j) part += e[kk] * a.u[(a.i1 + lane * 4 + kk) * a.cols + c[k]];
                    v = wrow[c[k]] - warp_sum(part);
                }
                const float d = a.u[c[k] * a.cols + c[k]];
                s[k] = v * v / (d * d);
            }
            for (int k = 0; k < 4; ++k) {
                int rank = 0;
                for (int m = 0; m < 4; ++m) rank += s[m] < s[k] || (s[m] == s[k] && m < k);
                if (rank >= 2) continue;
                if (c[k] < a.i1 + count) {
                    const int jj = int(c[k] - a.i1);
                    if (lane == (jj >> 2)) p[jj & 3] = true;
                } else if (lane == 0) {
                    prow[c[k]] = 1;
                }
            }
        }
        const int owner = j >> 2, slot = j & 3;
        const float wj = __shfl_sync(kFull, pick(w, slot), owner);
        const bool pj = __shfl_sync(kFull, int(pick(p, slot)), owner);
        if (!pj) continue;
        const float ej = wj / us[j * count + j];
        for (int k = 0; k < 4; ++k) {
            const int t = lane * 4 + k;
            if (t == j) {
                e[k] = ej;
                w[k] = 0.0f;
            } else if (t > j && t < count) {
                w[k] -= ej * us[j * count + t];
            }
        }
    }
    for (int k = 0; k < 4; ++k) {
        const int j = lane * 4 + k;
        if (j >= count) continue;
        wrow[a.i1 + j] = w[k];
        a.err[row * count + j] = e[k];
    }
}

__global__ void block_scores_kernel(const float* w, const float* u, const uint8_t* dense, int64_t rows, int64_t cols, int64_t i1,
                                    int64_t count, float* keys, int32_t* values) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= rows * count) return;
    const int64_t r = i / count, c = i1 + i % count;
    const float d = u[c * cols + c], v = w[r * cols + c];
    keys[i] = dense[c] ? INFINITY : v * v / (d * d);
    values[i] = int32_t(i);
}

__global__ void mark_pruned_kernel(const int32_t* values, int64_t n, int64_t cols, int64_t i1, int64_t count, uint8_t* pruned) {
    const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int64_t v = values[i];
    pruned[(v / count) * cols + i1 + v % count] = 1;
}

}  // namespace

void launch_add_lower_f64(const float* batch, double* sum, int64_t dim, cudaStream_t stream) {
    add_lower_f64_kernel<<<blocks_for(dim * dim, 256), 256, 0, stream>>>(batch, sum, dim);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "add_lower_f64 [", dim, ", ", dim, "]");
}

void launch_finalize_hessian(const double* sum, double* h, int64_t dim, double scale, cudaStream_t stream) {
    const dim3 grid(unsigned((dim + 31) / 32), unsigned((dim + 31) / 32)), block(32, 8);
    finalize_hessian_kernel<<<grid, block, 0, stream>>>(sum, h, dim, scale);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "finalize_hessian [", dim, ", ", dim, "]");
}

void launch_add_column_sq_norms(const float* x, int64_t rows, int64_t cols, double* acc, cudaStream_t stream) {
    column_sq_sums_kernel<<<blocks_for(cols, 128), 128, 0, stream>>>(x, rows, cols, acc, true);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "add_column_sq_norms [", rows, ", ", cols, "]");
}

void launch_row_weighted_sq_sums(const float* w, int64_t rows, int64_t cols, const double* c, double* out, cudaStream_t stream) {
    row_weighted_sq_sums_kernel<<<blocks_for(rows * 32, 256), 256, 0, stream>>>(w, rows, cols, c, out);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "row_weighted_sq_sums [", rows, ", ", cols, "]");
}

void launch_column_sq_sums(const float* w, int64_t rows, int64_t cols, double* out, cudaStream_t stream) {
    column_sq_sums_kernel<<<blocks_for(cols, 128), 128, 0, stream>>>(w, rows, cols, out, false);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "column_sq_sums [", rows, ", ", cols, "]");
}

void launch_zero_columns(float* w, int64_t rows, int64_t cols, const uint8_t* dead, cudaStream_t stream) {
    zero_columns_kernel<<<blocks_for(rows * cols, 256), 256, 0, stream>>>(w, rows, cols, dead);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "zero_columns [", rows, ", ", cols, "]");
}

void launch_f64_to_f32(const double* src, float* dst, int64_t n, cudaStream_t stream) {
    f64_to_f32_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(src, dst, n);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "f64_to_f32 of ", n);
}

void launch_diff_f64(const float* a, const float* b, double* d, int64_t n, cudaStream_t stream) {
    diff_f64_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(a, b, d, n);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "diff_f64 of ", n);
}

void launch_row_dots_f64(const double* a, const double* b, int64_t rows, int64_t cols, double* out, cudaStream_t stream) {
    row_dots_f64_kernel<<<blocks_for(rows * 32, 256), 256, 0, stream>>>(a, b, rows, cols, out);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "row_dots_f64 [", rows, ", ", cols, "]");
}

void launch_sparsegpt_block(const SparseGptBlock& b, cudaStream_t stream) {
    SPENSE_CHECK(b.count > 0 && b.count <= kMaxBlock, "GPU SparseGPT handles column blocks of 1 to ", kMaxBlock, " (got ", b.count,
                 "; use --blocksize 128 or less)");
    const size_t smem = size_t(b.count * b.count) * sizeof(float);
    static bool configured = false;
    if (!configured) {
        SPENSE_CUDA_CHECK(cudaFuncSetAttribute(sparsegpt_block_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               int(kMaxBlock * kMaxBlock * sizeof(float))));
        configured = true;
    }
    sparsegpt_block_kernel<<<blocks_for(b.rows, kBlockWarps), kBlockWarps * 32, smem, stream>>>(b);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "sparsegpt_block [", b.rows, ", ", b.cols, "] columns ", b.i1, " + ", b.count);
}

void launch_block_scores(const float* w, const float* u, const uint8_t* dense, int64_t rows, int64_t cols, int64_t i1, int64_t count,
                         float* keys, int32_t* values, cudaStream_t stream) {
    block_scores_kernel<<<blocks_for(rows * count, 256), 256, 0, stream>>>(w, u, dense, rows, cols, i1, count, keys, values);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "block_scores [", rows, ", ", count, "]");
}

void launch_mark_pruned(const int32_t* values, int64_t n, int64_t cols, int64_t i1, int64_t count, uint8_t* pruned, cudaStream_t stream) {
    if (n == 0) return;
    mark_pruned_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(values, n, cols, i1, count, pruned);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "mark_pruned of ", n);
}

size_t sort_pairs_workspace(int64_t n) {
    size_t bytes = 0;
    SPENSE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const float*>(nullptr), static_cast<float*>(nullptr),
                                                      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), int(n)),
                      "sort workspace for ", n, " pairs");
    return bytes;
}

void sort_pairs(void* workspace, size_t bytes, const float* keys_in, float* keys_out, const int32_t* values_in, int32_t* values_out,
                int64_t n, cudaStream_t stream) {
    SPENSE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(workspace, bytes, keys_in, keys_out, values_in, values_out, int(n), 0,
                                                      int(sizeof(float) * 8), stream),
                      "sorting ", n, " pairs");
}

}  // namespace spense::gpu
