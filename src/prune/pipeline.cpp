#include "prune/pipeline.h"

#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "core/progress.h"
#include "prune/hessian.h"
#include "prune/masks.h"

namespace spense {

PruneMethod parse_prune_method(const std::string& s) {
    if (s == "magnitude") return PruneMethod::Magnitude;
    if (s == "wanda") return PruneMethod::Wanda;
    if (s == "sparsegpt") return PruneMethod::SparseGpt;
    if (s == "spensegpt") return PruneMethod::SpenseGpt;
    if (s == "spensegpt+") return PruneMethod::SpenseGptPlus;
    fail("--method '", s, "' is not one of: magnitude, wanda, sparsegpt, spensegpt, spensegpt+");
}

const char* prune_method_name(PruneMethod m) {
    switch (m) {
        case PruneMethod::Magnitude: return "magnitude";
        case PruneMethod::Wanda: return "wanda";
        case PruneMethod::SparseGpt: return "sparsegpt";
        case PruneMethod::SpenseGpt: return "spensegpt";
        case PruneMethod::SpenseGptPlus: return "spensegpt+";
    }
    return "?";
}

bool is_spense(PruneMethod m) { return m == PruneMethod::SpenseGpt || m == PruneMethod::SpenseGptPlus; }

IndexScore parse_index_score(const std::string& s) {
    if (s == "wanda") return IndexScore::Wanda;
    if (s == "sparsegpt") return IndexScore::SparseGpt;
    fail("--score '", s, "' is not one of: wanda, sparsegpt");
}

const char* index_score_name(IndexScore s) { return s == IndexScore::Wanda ? "wanda" : "sparsegpt"; }

int64_t PruneOptions::validate(const ModelConfig& cfg) const {
    const bool unstructured = pattern == PruneSpec::Pattern::Unstructured;
    if (is_spense(method) && unstructured) fail("--pattern unstructured is for the baselines; ", prune_method_name(method), " is 2:4 plus a dense region");
    if (method != PruneMethod::SpenseGptPlus && (score != IndexScore::Wanda || layout != DenseLayout::Back))
        fail("--score and --layout choose SpenseGPT+'s dense region; they do not apply to ", prune_method_name(method));
    if (sparsegpt.percdamp <= 0 || sparsegpt.blocksize <= 0)
        fail("--percdamp and --blocksize must be positive (got ", sparsegpt.percdamp, " and ", sparsegpt.blocksize, ")");
    if (unstructured) {
        if (!(sparsity > 0 && sparsity < 1)) fail("--sparsity ", sparsity, " must lie in (0, 1) for unstructured pruning");
        return 0;
    }
    if (!is_spense(method) && sparsity != 0.5)
        fail("--sparsity ", sparsity, ": 2:4 pruning with ", prune_method_name(method), " is 50% (use spensegpt or spensegpt+ for 37.5% and 25%, or --pattern unstructured)");
    return spense_dense_count(cfg.intermediate, cfg.hidden, sparsity, align);
}

nlohmann::json PruneOptions::to_json() const {
    return {{"method", prune_method_name(method)},
            {"pattern", pattern == PruneSpec::Pattern::TwoFour ? "2:4" : "unstructured"},
            {"sparsity", sparsity},
            {"align", align},
            {"score", is_spense(method) ? nlohmann::json(method == PruneMethod::SpenseGpt ? "last-k" : index_score_name(score)) : nullptr},
            {"layout", is_spense(method) ? nlohmann::json(dense_layout_name(layout)) : nullptr},
            {"percdamp", sparsegpt.percdamp},
            {"blocksize", sparsegpt.blocksize},
            {"weight_dtype", dtype_name(weight_dtype)}};
}

nlohmann::json LayerReport::to_json() const {
    auto lin = [](const LinearReport& r) {
        return nlohmann::json{{"masked_error", r.masked_error}, {"error", r.error}, {"sparsity", r.sparsity}};
    };
    return {{"layer", layer}, {"dense", dense},          {"gate", lin(gate)}, {"up", lin(up)},
            {"down", lin(down)}, {"mlp_error", mlp_error}, {"seconds", seconds}};
}

namespace {

void round_to(std::vector<float>& v, DType dtype) {
    switch (dtype) {
        case DType::F32: return;
        case DType::BF16:
            for (float& x : v) x = bf16_to_f32(f32_to_bf16(x));
            return;
        case DType::F16:
            for (float& x : v) x = f16_to_f32(f32_to_f16(x));
            return;
        default: fail("weights cannot be stored as ", dtype_name(dtype));
    }
}

Matrix permute_rows(const Matrix& m, const std::vector<int64_t>& order) {
    Matrix out(m.rows, m.cols);
    for (int64_t r = 0; r < m.rows; ++r) std::copy_n(m.row(order[size_t(r)]), m.cols, out.row(r));
    return out;
}

Matrix permute_cols(const Matrix& m, const std::vector<int64_t>& order) {
    Matrix out(m.rows, m.cols);
    for (int64_t r = 0; r < m.rows; ++r)
        for (int64_t c = 0; c < m.cols; ++c) out(r, c) = m(r, order[size_t(c)]);
    return out;
}

// The weight as the final mask leaves it, without the reconstruction's updates.
Matrix masked_like(const Matrix& original, const Matrix& pruned) {
    Matrix m = original;
    for (size_t i = 0; i < m.data.size(); ++i)
        if (pruned.data[i] == 0.0f) m.data[i] = 0.0f;
    return m;
}

LinearReport linear_report(const Matrix& original, const Matrix& pruned, const std::vector<double>& hessian) {
    LinearReport r;
    r.masked_error = relative_error(original, masked_like(original, pruned), hessian);
    r.error = relative_error(original, pruned, hessian);
    int64_t zeros = 0;
    for (float v : pruned.data) zeros += v == 0.0f;
    r.sparsity = double(zeros) / double(pruned.data.size());
    return r;
}

std::vector<double> sqrt_of(std::vector<double> v) {
    for (double& x : v) x = std::sqrt(x);
    return v;
}

// Prunes `w` (inputs: `hessian` and `col_norms_sq`) as the method prunes, with 2:4 groups and
// dense columns from `spec`; rows whose `dense_row` flag is set are left out of the problem.
void prune_linear(Matrix& w, const std::vector<uint8_t>& dense_row, const PruneSpec& spec, const std::vector<double>& hessian,
                  const std::vector<double>& col_norms_sq, const PruneOptions& opt, const std::string& what) {
    std::vector<int64_t> rows;
    for (int64_t r = 0; r < w.rows; ++r)
        if (dense_row.empty() || !dense_row[size_t(r)]) rows.push_back(r);
    if (rows.empty()) return;
    Matrix sub(int64_t(rows.size()), w.cols);
    for (size_t i = 0; i < rows.size(); ++i) std::copy_n(w.row(rows[i]), w.cols, sub.row(int64_t(i)));

    const bool two_four = spec.pattern == PruneSpec::Pattern::TwoFour;
    switch (opt.method) {
        case PruneMethod::Magnitude:
        case PruneMethod::Wanda: {
            // Baselines carry no dense region: their 2:4 groups are the adjacent ones.
            std::vector<double> scale = opt.method == PruneMethod::Wanda ? sqrt_of(col_norms_sq) : std::vector<double>(size_t(w.cols), 1.0);
            if (two_four) prune_2to4_by_score(sub, scale);
            else prune_unstructured_by_score(sub, scale, spec.sparsity, opt.method == PruneMethod::Wanda);
            break;
        }
        case PruneMethod::SparseGpt:
        case PruneMethod::SpenseGpt:
        case PruneMethod::SpenseGptPlus:
            sparsegpt_prune(sub, hessian, spec, opt.sparsegpt, what);
            break;
    }
    for (size_t i = 0; i < rows.size(); ++i) std::copy_n(sub.row(int64_t(i)), w.cols, w.row(rows[i]));
}

}  // namespace

void round_weights(ModelWeights& w, DType dtype) {
    if (dtype == DType::F32) return;
    round_to(w.embed.data, dtype);
    round_to(w.lm_head.data, dtype);
    round_to(w.final_norm, dtype);
    for (auto& l : w.layers) {
        for (auto* v : {&l.input_norm, &l.post_norm, &l.attn.q_bias, &l.attn.k_bias, &l.attn.v_bias, &l.attn.o_bias, &l.attn.q_norm,
                        &l.attn.k_norm})
            round_to(*v, dtype);
        for (auto* m : {&l.attn.q, &l.attn.k, &l.attn.v, &l.attn.o}) round_to(m->data, dtype);
        if (auto* mlp = dynamic_cast<DenseMlp*>(l.mlp.get()))
            for (auto* m : {&mlp->gate, &mlp->up, &mlp->down}) round_to(m->data, dtype);
    }
}

PruneReport prune_model(Transformer& model, const CalibrationSet& calib, const PruneOptions& opt) {
    const ModelConfig& cfg = model.config();
    const int64_t k = opt.validate(cfg), d = cfg.hidden, f = cfg.intermediate;
    SPENSE_CHECK(!calib.samples.empty(), "pruning needs calibration samples");
    for (const auto& s : calib.samples)
        if (int64_t(s.size()) > cfg.max_positions)
            fail("calibration sequences of ", s.size(), " tokens exceed the model's context of ", cfg.max_positions, " (use a smaller --seqlen)");
    const bool unstructured = opt.pattern == PruneSpec::Pattern::Unstructured;

    std::vector<Matrix> x;
    x.reserve(calib.samples.size());
    for (const auto& s : calib.samples) x.push_back(model.embed(s));

    PruneReport report;
    Progress progress("prune: layer", cfg.n_layers);
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
        const double t0 = progress.elapsed();
        auto* mlp = dynamic_cast<DenseMlp*>(model.weights().layers[size_t(l)].mlp.get());
        SPENSE_CHECK(mlp != nullptr, "layer ", l, ": only dense MLPs can be pruned");
        const std::string where = "layer " + std::to_string(l);

        for (auto& xs : x) model.attention_block(l, xs);

        // Statistics of the MLP input, and for SpenseGPT+ of the unpruned intermediate activation.
        HessianAccumulator h_in(d, where + " mlp input");
        const bool plus = opt.method == PruneMethod::SpenseGptPlus;
        std::vector<double> z0_norms(size_t(f), 0.0);
        std::unique_ptr<HessianAccumulator> h_z0;
        if (plus && opt.score == IndexScore::SparseGpt) h_z0 = std::make_unique<HessianAccumulator>(f, where + " unpruned intermediate");
        for (const auto& xs : x) {
            Matrix h = model.mlp_input(l, xs);
            h_in.add(h);
            if (plus) {
                Matrix z = mlp->intermediate(h);
                if (h_z0) h_z0->add(z);
                else accumulate_column_sq_norms(z, z0_norms);
            }
        }
        const std::vector<double> hess_in = h_in.hessian();

        // The dense set and the orders of intermediate indices.
        std::vector<int64_t> dense;
        if (opt.method == PruneMethod::SpenseGpt) {
            for (int64_t i = f - k; i < f; ++i) dense.push_back(i);
        } else if (plus) {
            std::vector<double> c_in, c_z;
            if (opt.score == IndexScore::Wanda) {
                c_in = h_in.column_sq_norms();
                c_z = z0_norms;
            } else {
                c_in = sparsegpt_column_weights(hess_in, d, opt.sparsegpt.percdamp, where + " mlp input");
                c_z = sparsegpt_column_weights(h_z0->hessian(), f, opt.sparsegpt.percdamp, where + " intermediate");
            }
            dense = top_k_indices(index_priority(mlp->gate, mlp->up, mlp->down, c_in, c_z), k);
        }
        const IndexOrders orders = index_orders(f, dense, plus ? opt.layout : DenseLayout::Back);

        // Prune in the pruning order: gate/up rows and down columns permuted alike.
        const DenseMlp original(permute_rows(mlp->gate, orders.pruning), permute_rows(mlp->up, orders.pruning),
                                permute_cols(mlp->down, orders.pruning));
        *mlp = original;
        const PruneSpec row_spec = unstructured ? PruneSpec::unstructured(d, opt.sparsity) : PruneSpec::two_four(d, 0, d);
        const std::vector<double> in_norms = h_in.column_sq_norms();
        prune_linear(mlp->gate, orders.dense_position, row_spec, hess_in, in_norms, opt, where + " gate_proj");
        prune_linear(mlp->up, orders.dense_position, row_spec, hess_in, in_norms, opt, where + " up_proj");
        round_to(mlp->gate.data, opt.weight_dtype);
        round_to(mlp->up.data, opt.weight_dtype);

        HessianAccumulator h_z(f, where + " intermediate");
        for (const auto& xs : x) h_z.add(mlp->intermediate(model.mlp_input(l, xs)));
        const std::vector<double> hess_z = h_z.hessian();
        PruneSpec col_spec;
        if (unstructured) {
            col_spec = PruneSpec::unstructured(f, opt.sparsity);
        } else {
            col_spec.groups = orders.groups;
            col_spec.dense_column = orders.dense_position;
        }
        prune_linear(mlp->down, {}, col_spec, hess_z, h_z.column_sq_norms(), opt, where + " down_proj");
        round_to(mlp->down.data, opt.weight_dtype);

        LayerReport lr;
        lr.layer = l;
        lr.dense = k;
        lr.gate = linear_report(original.gate, mlp->gate, hess_in);
        lr.up = linear_report(original.up, mlp->up, hess_in);
        lr.down = linear_report(original.down, mlp->down, hess_z);
        lr.source_index = orders.runtime;

        // To the runtime layout: position p of the pruning order holds index pruning[p]; runtime
        // position q must hold index runtime[q].
        std::vector<int64_t> position(static_cast<size_t>(f)), to_runtime(static_cast<size_t>(f));
        for (int64_t p = 0; p < f; ++p) position[size_t(orders.pruning[size_t(p)])] = p;
        for (int64_t q = 0; q < f; ++q) to_runtime[size_t(q)] = position[size_t(orders.runtime[size_t(q)])];
        *mlp = DenseMlp(permute_rows(mlp->gate, to_runtime), permute_rows(mlp->up, to_runtime), permute_cols(mlp->down, to_runtime));

        double diff = 0, norm = 0;
        for (auto& xs : x) {
            Matrix h = model.mlp_input(l, xs), y_new, y_old;
            mlp->forward(h, y_new);
            original.forward(h, y_old);
            for (size_t i = 0; i < xs.data.size(); ++i) {
                const double e = double(y_new.data[i]) - y_old.data[i];
                diff += e * e;
                norm += double(y_old.data[i]) * y_old.data[i];
                xs.data[i] += y_new.data[i];
            }
        }
        lr.mlp_error = norm > 0 ? diff / norm : 0.0;
        lr.seconds = progress.elapsed() - t0;
        report.layers.push_back(lr);
        char detail[96];
        std::snprintf(detail, sizeof detail, "mlp error %.4f", lr.mlp_error);
        progress.update(l + 1, detail);
    }
    report.seconds = progress.finish();
    return report;
}

}  // namespace spense
