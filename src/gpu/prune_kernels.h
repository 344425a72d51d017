// The kernels of the GPU pruning backend (gpu_pruner.h): Hessian accumulation, score sums,
// SparseGPT's column-by-column block update and mask choice, errors. Host launchers on a stream;
// each checks its launch and throws spense::Error naming the kernel and sizes. Every reduction
// runs in a fixed order (no atomics), so results repeat bit for bit.
//
// Matrices are row-major. A Hessian sum S = X^T X is accumulated in float64 from float32 batch
// products of which only the lower triangle (r >= c) is read: cuBLAS's column-major upper
// triangle of a syrk is the row-major lower one.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace spense::gpu {

// sum[r, c] += batch[r, c] for r >= c ([dim, dim]).
void launch_add_lower_f64(const float* batch, double* sum, int64_t dim, cudaStream_t stream);
// h[r, c] = scale * sum[max(r, c), min(r, c)]: the full symmetric Hessian.
void launch_finalize_hessian(const double* sum, double* h, int64_t dim, double scale, cudaStream_t stream);
// acc[j] += sum_r x[r, j]^2 in float64, rows in order (x [rows, cols]).
void launch_add_column_sq_norms(const float* x, int64_t rows, int64_t cols, double* acc, cudaStream_t stream);
// out[r] = sum_j w[r, j]^2 * c[j] in float64 (SpenseGPT+ gate/up sums).
void launch_row_weighted_sq_sums(const float* w, int64_t rows, int64_t cols, const double* c, double* out, cudaStream_t stream);
// out[j] = sum_r w[r, j]^2 in float64 (SpenseGPT+ down sums, before the column weights).
void launch_column_sq_sums(const float* w, int64_t rows, int64_t cols, double* out, cudaStream_t stream);

// w[:, j] = 0 where dead[j] (dead inputs of SparseGPT).
void launch_zero_columns(float* w, int64_t rows, int64_t cols, const uint8_t* dead, cudaStream_t stream);
void launch_f64_to_f32(const double* src, float* dst, int64_t n, cudaStream_t stream);
// d = a - b in float64 (b null: d = a).
void launch_diff_f64(const float* a, const float* b, double* d, int64_t n, cudaStream_t stream);
// out[r] = sum_j a[r, j] * b[r, j] in float64.
void launch_row_dots_f64(const double* a, const double* b, int64_t rows, int64_t cols, double* out, cudaStream_t stream);

// One block of SparseGPT (sparsegpt.h) on W [rows, cols] with U = cholesky_upper(H^-1) [cols,
// cols] (only its upper triangle is read), for columns [i1, i1 + count), count <= 128. One warp
// per row; the block's U in shared memory. At each column starting a 2:4 group (group_at[c] >= 0,
// group g's columns groups[4g..4g+3], ascending, possibly beyond the block: their values then
// get the block's pending updates sum_t err[:, t] U[i1+t, c] first), prunes the 2 of 4 weights
// with the smallest w^2 / U_cc^2 (ties: the earlier column) by setting `pruned` [rows, cols]; then
// for each column j in order, where pruned: err = w_j / U_jj, w_j = 0, w[:, j+1:end] -= err U[j,
// j+1:end]; elsewhere err = 0. Writes the block's errors to err [rows, count].
struct SparseGptBlock {
    float* w = nullptr;
    const float* u = nullptr;
    float* err = nullptr;
    uint8_t* pruned = nullptr;
    const int32_t* group_at = nullptr;
    const int32_t* groups = nullptr;
    int64_t rows = 0, cols = 0, i1 = 0, count = 0;
};
void launch_sparsegpt_block(const SparseGptBlock& b, cudaStream_t stream);

// Unstructured SparseGPT: key[r * count + j] = w[r, i1+j]^2 / U_cc^2 (c = i1 + j; +inf for dense
// columns) and value = r * count + j, the candidates of the block's mask.
void launch_block_scores(const float* w, const float* u, const uint8_t* dense, int64_t rows, int64_t cols, int64_t i1, int64_t count,
                         float* keys, int32_t* values, cudaStream_t stream);
// pruned[r, i1 + j] = 1 for the first n of the sorted candidate values.
void launch_mark_pruned(const int32_t* values, int64_t n, int64_t cols, int64_t i1, int64_t count, uint8_t* pruned, cudaStream_t stream);
// Sorts (key, value) pairs ascending by key, stably: the workspace bytes for n pairs, then the sort.
size_t sort_pairs_workspace(int64_t n);
void sort_pairs(void* workspace, size_t bytes, const float* keys_in, float* keys_out, const int32_t* values_in, int32_t* values_out,
                int64_t n, cudaStream_t stream);

}  // namespace spense::gpu
