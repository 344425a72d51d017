// Calibration statistics of one linear layer's input X [tokens, d_in], accumulated batch by batch:
//   H = 2 X^T X / tokens   (SPEC.md, SparseGPT step 1)
// The products are formed and summed in float64 (BLAS dsyrk on the float32 activations widened),
// and the GPU backend forms them the same way (gpu_pruner.cpp): then the two differ only by their
// activations. Near-tied 2:4 choices in a model's later layers move at perturbations of H of about
// 1e-6 relative and cascade (a CPU run of SmolLM2 with the activations entering H perturbed by 1e-6
// agreed with the unperturbed run on 97.2% of groups; by 6e-8, or the float32 forward perturbed by
// 1.2e-7 at every layer: 100%). With float32 products on the GPU (cuBLAS), the GPU and the CPU
// agreed on 98.2%; with float64 on both, 99.5%. On the CPU, float64 products left SmolLM2's masks
// unchanged (OpenBLAS's float32 ones were already close enough); its prune took 2m47s instead of
// 2m31s on 16 cores.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/matrix.h"

namespace spense {

class HessianAccumulator {
public:
    // `what` names the layer input in error messages ("layer 3 mlp input").
    HessianAccumulator(int64_t dim, std::string what);

    // Adds the rows of x. Throws if x holds NaN or infinity (naming the layer input), since one
    // such value would silently poison every pruning decision downstream.
    void add(const Matrix& x);

    int64_t dim() const { return dim_; }
    int64_t tokens() const { return tokens_; }
    // H = 2 X^T X / tokens, row-major [dim, dim].
    std::vector<double> hessian() const;
    // ||X[:, j]||^2 for every input column j (the Wanda norms, squared).
    std::vector<double> column_sq_norms() const;

private:
    int64_t dim_;
    std::string what_;
    int64_t tokens_ = 0;
    std::vector<double> sum_;    // X^T X, upper triangle
    std::vector<double> batch_;  // one batch of x, widened
};

// acc[j] += ||x[:, j]||^2 (float64): the Wanda column norms, without the full X^T X.
void accumulate_column_sq_norms(const Matrix& x, std::vector<double>& acc);

}  // namespace spense
