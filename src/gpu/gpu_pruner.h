// The GPU backend of the pruning pipeline (prune/backend.h): the calibration forward of one
// decoder layer (cuBLAS products, layer_forward.h's kernels and streaming attention), Hessians
// accumulated in float64 from float32 batch products, the Cholesky factors of H^-1 in float64
// (cuSOLVER potrf, potri, potrf), SparseGPT's blocks (prune_kernels.h) with cuBLAS lazy updates,
// score sums and errors.
//
// Bounded memory: the device holds one layer's weights (uploaded per call from the host model),
// that layer's statistics and the calibration activations x [samples * T, hidden] in float32 when
// they fit the activation budget; otherwise x stays in pinned host memory and passes through the
// device one chunk of samples at a time. Chunks also bound the scratch: a chunk's rows times d_ff
// floats stay near 2^29.
//
// Deterministic: cuBLAS products and every reduction here run in a fixed order, so the same
// inputs give the same bits (what resuming relies on).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "prune/backend.h"

namespace spense::gpu {

// The matrix products of the forward and of X^T X: float32, or TF32 / BF16 tensor-core products
// of float32 data with float32 accumulation. SparseGPT's own updates and errors stay float32 /
// float64 whatever the choice.
enum class GpuMath { F32, TF32, BF16 };
GpuMath parse_gpu_math(const std::string& s);  // f32 | tf32 | bf16
const char* gpu_math_name(GpuMath m);

struct GpuPruneOptions {
    GpuMath math = GpuMath::F32;
    // Device bytes for the activations; < 0: what is free after the working set of a layer.
    int64_t activation_budget_bytes = -1;
};

class GpuPruneBackend : public PruneBackend {
public:
    // Throws if there is no CUDA device.
    GpuPruneBackend(const Transformer& model, GpuPruneOptions opt);
    ~GpuPruneBackend() override;

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
    // {"device": "cuda", "gpu", "math", "activations": "device" | "host", "chunk_samples",
    //  "peak_device_bytes" (device-wide memory in use, sampled after each stage),
    //  "device_bytes_in_use_at_start" (the same before this backend allocated anything), "stage_seconds"}
    nlohmann::json describe() const override;

    // Seconds per stage so far (forward, hessian, index_selection, sparsegpt, errors), then zeroed.
    nlohmann::json take_stage_seconds();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace spense::gpu
