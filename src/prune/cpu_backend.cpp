#include "prune/cpu_backend.h"

#include "core/error.h"

namespace spense {

void CpuPruneBackend::embed(const CalibrationSet& calib) {
    x_.clear();
    x_.reserve(calib.samples.size());
    for (const auto& s : calib.samples) x_.push_back(model_.embed(s));
}

void CpuPruneBackend::attention(int64_t l) {
    for (auto& xs : x_) model_.attention_block(l, xs);
}

void CpuPruneBackend::mlp_forward(int64_t l, const DenseMlp& mlp) {
    for (auto& xs : x_) {
        Matrix y;
        mlp.forward(model_.mlp_input(l, xs), y);
        for (size_t i = 0; i < xs.data.size(); ++i) xs.data[i] += y.data[i];
    }
}

void CpuPruneBackend::collect_input(int64_t l, const DenseMlp& mlp, Z0Stats z0, const std::string& what) {
    const int64_t d = model_.config().hidden, f = model_.config().intermediate;
    input_ = std::make_unique<HessianAccumulator>(d, what + " mlp input");
    z0_.reset();
    z0_norms_.assign(size_t(f), 0.0);
    if (z0 == Z0Stats::Hessian) z0_ = std::make_unique<HessianAccumulator>(f, what + " unpruned intermediate");
    for (const auto& xs : x_) {
        Matrix h = model_.mlp_input(l, xs);
        input_->add(h);
        if (z0 == Z0Stats::None) continue;
        Matrix z = mlp.intermediate(h);
        if (z0_) z0_->add(z);
        else accumulate_column_sq_norms(z, z0_norms_);
    }
    hess_input_ = input_->hessian();
}

void CpuPruneBackend::collect_intermediate(int64_t l, const DenseMlp& mlp, const std::string& what) {
    z_ = std::make_unique<HessianAccumulator>(model_.config().intermediate, what + " intermediate");
    for (const auto& xs : x_) z_->add(mlp.intermediate(model_.mlp_input(l, xs)));
    hess_z_ = z_->hessian();
}

const HessianAccumulator& CpuPruneBackend::stat(Stat s) const {
    const HessianAccumulator* a = s == Stat::Input ? input_.get() : s == Stat::Intermediate ? z_.get() : z0_.get();
    SPENSE_CHECK(a != nullptr, "pruning backend: a statistic was asked for before it was collected");
    return *a;
}

std::vector<double> CpuPruneBackend::column_sq_norms(Stat s) {
    if (s == Stat::Intermediate0 && !z0_) return z0_norms_;
    return stat(s).column_sq_norms();
}

std::vector<double> CpuPruneBackend::sparsegpt_column_weights(Stat s, double percdamp, const std::string& what) {
    const HessianAccumulator& a = stat(s);
    return spense::sparsegpt_column_weights(a.hessian(), a.dim(), percdamp, what);
}

IndexSums CpuPruneBackend::index_sums(const DenseMlp& mlp, const std::vector<double>& c_in, const std::vector<double>& c_z) {
    return spense::index_sums(mlp.gate, mlp.up, mlp.down, c_in, c_z);
}

void CpuPruneBackend::sparsegpt(Stat s, Matrix& w, const PruneSpec& spec, const SparseGptOptions& opt, const std::string& what) {
    SPENSE_CHECK(s != Stat::Intermediate0, "SparseGPT runs on the input or the pruned intermediate Hessian");
    sparsegpt_prune(w, s == Stat::Input ? hess_input_ : hess_z_, spec, opt, what);
}

double CpuPruneBackend::relative_error(Stat s, const Matrix& w, const Matrix& w_new) {
    SPENSE_CHECK(s != Stat::Intermediate0, "errors are measured on the input or the pruned intermediate Hessian");
    return spense::relative_error(w, w_new, s == Stat::Input ? hess_input_ : hess_z_);
}

double CpuPruneBackend::apply_mlp(int64_t l, const DenseMlp& pruned, const DenseMlp& original) {
    double diff = 0, norm = 0;
    for (auto& xs : x_) {
        Matrix h = model_.mlp_input(l, xs), y_new, y_old;
        pruned.forward(h, y_new);
        original.forward(h, y_old);
        for (size_t i = 0; i < xs.data.size(); ++i) {
            const double e = double(y_new.data[i]) - y_old.data[i];
            diff += e * e;
            norm += double(y_old.data[i]) * y_old.data[i];
            xs.data[i] += y_new.data[i];
        }
    }
    return norm > 0 ? diff / norm : 0.0;
}

}  // namespace spense
