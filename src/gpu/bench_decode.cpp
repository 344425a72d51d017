#include "gpu/bench_decode.h"

#include <cuda_profiler_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <string>

#include "core/error.h"
#include "gpu/bandwidth.h"
#include "gpu/bench_util.h"
#include "gpu/check.h"
#include "gpu/context.h"
#include "gpu/decode_engine.h"

namespace spense::gpu {

namespace {

// `run` one step (or part of one) `steps` times after two untimed runs, each from `context` cached tokens.
Timing time_steps(DecodeEngine& engine, int64_t context, int64_t steps, const std::function<void()>& run) {
    const std::vector<int32_t> lengths(size_t(engine.options().batch), int32_t(context));
    cudaStream_t st = engine.stream();
    cudaEvent_t e0, e1;
    SPENSE_CUDA_CHECK(cudaEventCreate(&e0));
    SPENSE_CUDA_CHECK(cudaEventCreate(&e1));
    std::vector<double> t;
    for (int64_t i = 0; i < steps + 2; ++i) {
        engine.set_lengths(lengths);
        // Profilers started with the profiling off (ncu --profile-from-start off) see the timed steps only.
        if (i == 2) SPENSE_CUDA_CHECK(cudaProfilerStart());
        SPENSE_CUDA_CHECK(cudaEventRecord(e0, st));
        run();
        SPENSE_CUDA_CHECK(cudaEventRecord(e1, st));
        SPENSE_CUDA_CHECK(cudaEventSynchronize(e1), "decode step at context ", context);
        float ms = 0;
        SPENSE_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        if (i >= 2) t.push_back(ms);  // a whole step's first run is eager, the next captures the graph
    }
    SPENSE_CUDA_CHECK(cudaProfilerStop());
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return summarize(std::move(t));
}

}  // namespace

nlohmann::json run_decode_bench(const DecodeBenchOptions& opt, std::ostream& out) {
    const auto t0 = std::chrono::steady_clock::now();
    const ModelConfig& cfg = opt.config;
    SPENSE_CHECK(!opt.contexts.empty() && !opt.sparsities.empty(), "bench decode: no contexts or sparsities to measure");
    for (double s : opt.sparsities) SPENSE_CHECK(s >= 0 && s <= 0.5, "bench decode: MLP sparsity ", s, " is outside [0, 0.5]");
    for (int64_t c : opt.contexts) SPENSE_CHECK(c >= 0, "bench decode: context ", c, " is negative");
    std::vector<double> sparsities = opt.sparsities;
    if (std::find(sparsities.begin(), sparsities.end(), 0.0) == sparsities.end()) sparsities.insert(sparsities.begin(), 0.0);
    std::sort(sparsities.begin(), sparsities.end());

    GpuContext ctx;
    const nlohmann::json run = bench_run_info(ctx);
    print_run_header(out, "bench decode", run);
    double read_bw = 0, copy_bw = 0;
    {
        const BenchStream st;
        read_bw = read_bandwidth(st.get());
        copy_bw = copy_bandwidth(st.get());
    }
    std::fprintf(stderr, "bench decode: %s, %lld layers, batch %lld, %s; read bandwidth %.0f GB/s, copy %.0f GB/s\n",
                 opt.config_name.c_str(), (long long)cfg.n_layers, (long long)opt.batch, gemm_dtype_name(opt.dtype), read_bw / 1e9,
                 copy_bw / 1e9);

    const int64_t max_ctx = *std::max_element(opt.contexts.begin(), opt.contexts.end()) + 1;
    nlohmann::json rows = nlohmann::json::array();
    std::map<int64_t, std::pair<double, double>> dense_at;  // context -> (dense step ms, dense floor ms)
    for (double sparsity : sparsities) {
        const double rho = 1.0 - 2.0 * sparsity;
        const int64_t dense = sparsity == 0 ? cfg.intermediate
                                            : int64_t(std::llround(rho * double(cfg.intermediate) / double(opt.align))) * opt.align;
        const auto b0 = std::chrono::steady_clock::now();
        auto engine = DecodeEngine::random(ctx, cfg, dense, {opt.dtype, opt.batch, max_ctx}, opt.seed);
        const double build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - b0).count();
        std::fprintf(stderr, "bench decode: sparsity %.3f (dense %lld of %lld): weights %.2f GB, built in %.1f s\n", sparsity,
                     (long long)dense, (long long)cfg.intermediate, engine->weight_bytes() / 1e9, build_s);
        for (int64_t c : opt.contexts) {
            const Timing t = time_steps(*engine, c, opt.steps, [&] { engine->step(); });
            // The step's parts alone (each a graph of its own kernels): where the time goes, and by
            // their sum against the step, how much the boundaries between them cost.
            std::map<std::string, double> part_ms;
            for (const auto& [name, part] : {std::pair<const char*, unsigned>{"gemms", DecodeEngine::kGemms},
                                             {"attention", DecodeEngine::kAttention},
                                             {"elementwise", DecodeEngine::kElementwise}})
                part_ms[name] = time_steps(*engine, c, opt.steps, [&, part = part] { engine->step_parts(part); }).median;
            const double bytes = engine->weight_bytes() + engine->kv_bytes(c);
            const double floor_ms = bytes / read_bw * 1e3;
            if (sparsity == 0) dense_at[c] = {t.median, floor_ms};
            const auto [dense_ms, dense_floor] = dense_at.at(c);
            nlohmann::json r = {{"sparsity", sparsity},
                                {"dense_ratio", double(dense) / double(cfg.intermediate)},
                                {"dense_count", dense},
                                {"mlp_backends", engine->mlp_backends()},
                                {"k_halves", engine->k_halves()},
                                {"context", c},
                                {"step_ms", t.median},
                                {"step_ms_min", t.min},
                                {"step_ms_max", t.max},
                                {"gemms_ms", part_ms["gemms"]},
                                {"attention_ms", part_ms["attention"]},
                                {"elementwise_ms", part_ms["elementwise"]},
                                {"tokens_per_s", double(opt.batch) / (t.median * 1e-3)},
                                {"weight_bytes", engine->weight_bytes()},
                                {"kv_bytes", engine->kv_bytes(c)},
                                {"floor_ms", floor_ms},
                                {"floor_fraction", floor_ms / t.median},
                                {"speedup_vs_dense", dense_ms / t.median},
                                {"floor_ratio_vs_dense", dense_floor / floor_ms}};
            r["speedup_over_floor_ratio"] = r["speedup_vs_dense"].get<double>() / r["floor_ratio_vs_dense"].get<double>();
            std::fprintf(stderr, "bench decode:   context %lld: %.3f ms per step (floor %.3f ms; GEMMs %.3f, attention %.3f, elementwise %.3f)\n",
                         (long long)c, t.median, floor_ms, part_ms["gemms"], part_ms["attention"], part_ms["elementwise"]);
            rows.push_back(r);
        }
    }

    out << "\n### Decode step, " << opt.config_name << " (" << cfg.n_layers << " layers, hidden " << cfg.hidden << ", d_ff "
        << cfg.intermediate << "), batch " << opt.batch << ", " << gemm_dtype_name(opt.dtype) << " weights, BF16 KV cache\n\n"
        << "Floor: weights + KV bytes over the measured read bandwidth " << fmt("%.0f", read_bw / 1e9) << " GB/s.\n\n"
        << "| MLP sparsity | dense ratio | context | step ms | tokens/s | floor ms | of floor | speedup vs dense | floor ratio | speedup / floor ratio |\n"
        << "|---|---|---|---|---|---|---|---|---|---|\n";
    for (const auto& r : rows) {
        out << "| " << fmt("%.1f%%", 100 * r["sparsity"].get<double>()) << " | " << fmt("%.3f", r["dense_ratio"].get<double>()) << " | "
            << r["context"].get<int64_t>() << " | " << fmt("%.3f", r["step_ms"].get<double>()) << " | "
            << fmt("%.0f", r["tokens_per_s"].get<double>()) << " | " << fmt("%.3f", r["floor_ms"].get<double>()) << " | "
            << fmt("%.1f%%", 100 * r["floor_fraction"].get<double>()) << " | " << fmt("%.3fx", r["speedup_vs_dense"].get<double>())
            << " | " << fmt("%.3fx", r["floor_ratio_vs_dense"].get<double>()) << " | "
            << fmt("%.1f%%", 100 * r["speedup_over_floor_ratio"].get<double>()) << " |\n";
    }
    out << "\nWhere the time goes: each part of the step alone, as a graph of its own kernels (ms); the rest is what\n"
        << "the step pays beyond the sum of its parts.\n\n"
        << "| MLP sparsity | context | step | GEMMs | attention | elementwise | step - parts |\n|---|---|---|---|---|---|---|\n";
    for (const auto& r : rows) {
        const double g = r["gemms_ms"].get<double>(), a = r["attention_ms"].get<double>(), e = r["elementwise_ms"].get<double>();
        out << "| " << fmt("%.1f%%", 100 * r["sparsity"].get<double>()) << " | " << r["context"].get<int64_t>() << " | "
            << fmt("%.3f", r["step_ms"].get<double>()) << " | " << fmt("%.3f", g) << " | " << fmt("%.3f", a) << " | " << fmt("%.3f", e)
            << " | " << fmt("%.3f", r["step_ms"].get<double>() - g - a - e) << " |\n";
    }

    return {{"command", "bench decode"},
            {"run", run},
            {"config", opt.config_name},
            {"layers", cfg.n_layers},
            {"hidden", cfg.hidden},
            {"intermediate", cfg.intermediate},
            {"heads", cfg.n_heads},
            {"kv_heads", cfg.n_kv_heads},
            {"head_dim", cfg.head_dim},
            {"vocab", cfg.vocab},
            {"batch", opt.batch},
            {"dtype", gemm_dtype_name(opt.dtype)},
            {"timed_steps", opt.steps},
            {"read_bandwidth_bytes_per_s", read_bw},
            {"copy_bandwidth_bytes_per_s", copy_bw},
            {"results", rows},
            {"plans", ctx.plan_report()},
            {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
}

}  // namespace spense::gpu
