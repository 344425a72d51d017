// What the pruning pipeline (pipeline.h) asks of the device it runs on. The pipeline holds the one
// description of the algorithm: the layer loop, the true-sequential order, the dense set, index
// orders and permutations, rounding to the weight type, reports and resumable state. A backend
// holds the calibration activations and the current layer's statistics, and does the heavy
// arithmetic: the decoder-layer forward, Hessians, element-score sums, SparseGPT, errors.
//
// Weights travel as host matrices (the pipeline's state); a backend may copy them to its device
// for the duration of a call. Statistics are named by which activation they describe:
//   Input          h  = mlp_input_l(x)                        [tokens, hidden]
//   Intermediate0  z0 = silu(h Wg^T) * (h Wu^T), unpruned      [tokens, d_ff]   (SpenseGPT+ scores)
//   Intermediate   z  = the same through the pruned gate/up    [tokens, d_ff]   (down's Hessian)
// Hessians are H = 2 X^T X / tokens; column norms are ||X[:, j]||^2 (hessian.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/matrix.h"
#include "model/transformer.h"
#include "prune/calibration.h"
#include "prune/dense_select.h"
#include "prune/sparsegpt.h"

namespace spense {

enum class Stat { Input, Intermediate0, Intermediate };

// What to gather about z0 while the input statistics are collected.
enum class Z0Stats { None, ColumnNorms, Hessian };

class PruneBackend {
public:
    virtual ~PruneBackend() = default;

    // x = the embeddings of the calibration samples (all of one length).
    virtual void embed(const CalibrationSet& calib) = 0;
    // x += attention_l(x) for every sample.
    virtual void attention(int64_t l) = 0;
    // x += mlp(mlp_input_l(x)) for every sample, bit for bit what apply_mlp adds.
    virtual void mlp_forward(int64_t l, const DenseMlp& mlp) = 0;

    // Input statistics of layer l's MLP (the Hessian and column norms of h), and those of z0.
    // Throws naming `what` when an activation is not finite.
    virtual void collect_input(int64_t l, const DenseMlp& mlp, Z0Stats z0, const std::string& what) = 0;
    // The Hessian of z through `mlp`'s (pruned) gate and up.
    virtual void collect_intermediate(int64_t l, const DenseMlp& mlp, const std::string& what) = 0;

    virtual std::vector<double> column_sq_norms(Stat s) = 0;
    // 1 / U_jj^2 of the damped Hessian of `s` (dense_select.h).
    virtual std::vector<double> sparsegpt_column_weights(Stat s, double percdamp, const std::string& what) = 0;
    virtual IndexSums index_sums(const DenseMlp& mlp, const std::vector<double>& c_in, const std::vector<double>& c_z) = 0;

    // SparseGPT on w (sparsegpt.h) against the Hessian of `s`.
    virtual void sparsegpt(Stat s, Matrix& w, const PruneSpec& spec, const SparseGptOptions& opt, const std::string& what) = 0;
    // relative_error (sparsegpt.h) against the Hessian of `s`.
    virtual double relative_error(Stat s, const Matrix& w, const Matrix& w_new) = 0;

    // x += pruned(h) for every sample (h = mlp_input_l(x)); returns
    // sum ||pruned(h) - original(h)||^2 / sum ||original(h)||^2 over every token.
    virtual double apply_mlp(int64_t l, const DenseMlp& pruned, const DenseMlp& original) = 0;

    // The backend's own account: peak device memory, time per stage (empty for the CPU).
    virtual nlohmann::json describe() const = 0;
};

}  // namespace spense
