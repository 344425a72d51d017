// The CPU backend of the pruning pipeline (backend.h): float32 BLAS through the Transformer's own
// forward, Hessians in float64 (hessian.h), SparseGPT of sparsegpt.h. The reference the GPU
// backend is checked against.
#pragma once

#include <memory>

#include "prune/backend.h"
#include "prune/hessian.h"

namespace spense {

class CpuPruneBackend : public PruneBackend {
public:
    explicit CpuPruneBackend(const Transformer& model) : model_(model) {}

    void embed(const CalibrationSet& calib) override;
    void attention(int64_t l) override;
    void mlp_forward(int64_t l, const DenseMlp& mlp) override;
    void collect_input(int64_t l, const DenseMlp& mlp, Z0Stats z0, const std::string& what) override;
    void collect_intermediate(int64_t l, const DenseMlp& mlp, const std::string& what) override;
    std::vector<double> column_sq_norms(Stat s) override;
    std::vector<double> sparsegpt_column_weights(Stat s, double percdamp, const std::string& what) override;
    IndexSums index_sums(const DenseMlp& mlp, const std::vector<double>& c_in, const std::vector<double>& c_z) override;
    void sparsegpt(Stat s, Matrix& w, const PruneSpec& spec, const SparseGptOptions& opt, const std::string& what) override;
    double relative_error(Stat s, const Matrix& w, const Matrix& w_new) override;
    double apply_mlp(int64_t l, const DenseMlp& pruned, const DenseMlp& original) override;
    nlohmann::json describe() const override { return {{"device", "cpu"}}; }

private:
    const HessianAccumulator& stat(Stat s) const;

    const Transformer& model_;
    std::vector<Matrix> x_;  // the hidden states entering the current layer, one per sample
    std::unique_ptr<HessianAccumulator> input_, z0_, z_;
    std::vector<double> z0_norms_;  // when z0's Hessian is not wanted
    std::vector<double> hess_input_, hess_z_;  // H of input_ and z_, formed once per layer
};

}  // namespace spense
