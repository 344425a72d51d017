#include "gpu/bench_gemm.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <type_traits>

#include "core/error.h"
#include "core/progress.h"
#include "gpu/bandwidth.h"
#include "gpu/bench_util.h"
#include "gpu/check.h"
#include "gpu/context.h"
#include "gpu/kernels.h"
#include "gpu/library_pdl.h"
#include "gpu/native_sparse.h"
#include "gpu/spense_mlp.h"

namespace spense::gpu {

BenchShape parse_bench_shape(const std::string& s) {
    if (s == "qwen3-32b") return {s, 5120, 25600};
    if (s == "qwen3-8b") return {s, 4096, 12288};
    if (s == "llama3-8b") return {s, 4096, 14336};
    const auto a = s.find(':'), b = s.rfind(':');
    if (a != std::string::npos && b != a) {
        try {
            return {s.substr(0, a), std::stoll(s.substr(a + 1, b - a - 1)), std::stoll(s.substr(b + 1))};
        } catch (const std::exception&) {
        }
    }
    fail("model shape '", s, "' is not one of qwen3-32b, qwen3-8b, llama3-8b, or NAME:HIDDEN:D_FF");
}

namespace {

// Times device work with CUDA events, each repetition after an L2 eviction (bench_gemm.h).
class Timer {
public:
    static constexpr int kMaxReps = 100, kMinReps = 5;

    Timer(const GpuContext& ctx, cudaStream_t stream, double budget_ms)
        : stream_(stream), budget_ms_(budget_ms), flush_(size_t(2 * ctx.props().l2CacheSize), "L2 eviction buffer"),
          sink_(sizeof(float), "L2 eviction sink") {
        SPENSE_CUDA_CHECK(cudaMemsetAsync(flush_.get(), 1, flush_.bytes(), stream));
        for (auto* v : {&start_, &stop_}) {
            v->resize(kMaxReps);
            for (auto& e : *v) SPENSE_CUDA_CHECK(cudaEventCreate(&e));
        }
    }
    ~Timer() {
        for (auto* v : {&start_, &stop_})
            for (auto& e : *v) cudaEventDestroy(e);
    }
    Timer(const Timer&) = delete;
    Timer& operator=(const Timer&) = delete;

    // fn() is called twice untimed (building plans), once timed for the estimate, then reps times.
    Timing measure(const std::function<void()>& fn) {
        fn();
        fn();
        run(fn, 1);
        const double estimate = elapsed(0);
        const int reps = std::clamp(int(budget_ms_ / std::max(estimate, 1e-3)), kMinReps, kMaxReps);
        run(fn, reps);
        std::vector<double> t(static_cast<size_t>(reps));
        for (int i = 0; i < reps; ++i) t[size_t(i)] = elapsed(i);
        return summarize(std::move(t));
    }

    // fn() captured into a CUDA graph after the two untimed calls that build its plans, then each
    // repetition one launch of the graph, timed as measure() times fn: fn as a decode step's graph
    // runs it (the forked stream's work a branch, library GEMMs with their programmatic edges).
    Timing measure_graph(const std::function<void()>& fn) {
        fn();
        fn();
        cudaGraph_t graph = nullptr;
        SPENSE_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "capturing the timed operation");
        try {
            fn();
        } catch (...) {
            cudaStreamEndCapture(stream_, &graph);  // ends the failed capture
            if (graph) cudaGraphDestroy(graph);
            throw;
        }
        SPENSE_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph), "capturing the timed operation");
        const std::unique_ptr<std::remove_pointer_t<cudaGraphExec_t>, decltype(&cudaGraphExecDestroy)> exec(
            instantiate_captured(graph, "the timed operation's graph"), cudaGraphExecDestroy);
        return measure([&] { SPENSE_CUDA_CHECK(cudaGraphLaunch(exec.get(), stream_), "the timed operation's graph"); });
    }

private:
    void run(const std::function<void()>& fn, int reps) {
        for (int i = 0; i < reps; ++i) {
            launch_read_buffer(flush_.get(), flush_.bytes(), sink_.as<float>(), stream_);
            SPENSE_CUDA_CHECK(cudaEventRecord(start_[size_t(i)], stream_));
            fn();
            SPENSE_CUDA_CHECK(cudaEventRecord(stop_[size_t(i)], stream_));
        }
        SPENSE_CUDA_CHECK(cudaEventSynchronize(stop_[size_t(reps - 1)]));
    }
    double elapsed(int i) const {
        float ms = 0;
        SPENSE_CUDA_CHECK(cudaEventElapsedTime(&ms, start_[size_t(i)], stop_[size_t(i)]));
        return ms;
    }

    cudaStream_t stream_;
    double budget_ms_;
    DeviceBuffer flush_, sink_;
    std::vector<cudaEvent_t> start_, stop_;
};

int64_t dense_count(const BenchShape& s, double ratio, int64_t align) {
    const int64_t k = int64_t(std::llround(ratio * double(s.d_ff) / double(align))) * align;
    return std::clamp<int64_t>(k, 0, s.d_ff);
}

}  // namespace

nlohmann::json run_gemm_bench(const GemmBenchOptions& opt, std::ostream& out) {
    SPENSE_CHECK(!opt.shapes.empty() && !opt.tokens.empty() && !opt.dtypes.empty(), "bench gemm: nothing to measure");
    const auto t_start = std::chrono::steady_clock::now();
    GpuContext ctx;
    const nlohmann::json run = bench_run_info(ctx);
    print_run_header(out, "bench gemm", run);
    const BenchStream owned_stream;
    const cudaStream_t stream = owned_stream.get();

    const double bw = copy_bandwidth(stream);
    Timer timer(ctx, stream, opt.budget_ms);
    std::vector<double> ratios = opt.ratios;
    for (double r : {0.0, 1.0})
        if (std::find(ratios.begin(), ratios.end(), r) == ratios.end()) ratios.push_back(r);
    std::sort(ratios.begin(), ratios.end());
    const int64_t n_max = *std::max_element(opt.tokens.begin(), opt.tokens.end());

    nlohmann::json gemm_rows = nlohmann::json::array(), mlp_rows = nlohmann::json::array();
    const int64_t total = int64_t(opt.shapes.size() * opt.dtypes.size() * opt.tokens.size()) * int64_t(ratios.size() + 2);
    Progress progress("bench gemm", total);
    int64_t done = 0;
    double build_seconds = 0;

    for (const BenchShape& shape : opt.shapes)
        for (GemmDType dtype : opt.dtypes) {
            GpuMlpOptions mo;
            mo.dtype = dtype;
            mo.dynamic_scales = opt.dynamic_scales;
            const auto t_build = std::chrono::steady_clock::now();
            std::map<double, std::unique_ptr<GpuSpenseMlp>> mlps;
            for (double r : ratios)
                mlps[r] = std::make_unique<GpuSpenseMlp>(GpuSpenseMlp::random(ctx, shape.hidden, shape.d_ff, dense_count(shape, r, opt.align),
                                                                              mo, opt.seed + uint64_t(r * 1000), stream));
            build_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_build).count();
            const SpenseMlpLayout& wide = mlps.at(1.0)->layout();
            const int64_t rows_max = SparseGemm::padded_rows(n_max), d = shape.hidden, f = wide.width();
            const size_t e = gemm_dtype_bytes(dtype);
            DeviceBuffer x(size_t(n_max * d) * 2, "benchmark input"), y(size_t(kMaxKParts * rows_max * d) * 2, "benchmark output (or its parts of k)");
            DeviceBuffer xq(size_t(rows_max * d) * e, "benchmark quantized input"), h(size_t(rows_max * 2 * f) * 2, "benchmark gate_up output"),
                z(size_t(rows_max * f) * e, "benchmark intermediate");
            // The read floor's source: the most bytes a GEMM of this shape moves (a padded 2:4 format of a small
            // shape can exceed the dense weight).
            const GpuSpenseMlp& plain = *mlps.at(0.0);
            const size_t read_max =
                round_up<size_t>(std::max({mlps.at(1.0)->gate_up_dense()->weight_bytes(), mlps.at(1.0)->down_dense()->weight_bytes(),
                                      plain.gate_up_sparse()->weight_bytes(), plain.down_sparse()->weight_bytes()}) +
                            size_t(n_max * (d + 2 * f)) * 2, 16);
            DeviceBuffer read_src(read_max, "read floor source"), read_sink(sizeof(float), "read floor sink");
            SPENSE_CUDA_CHECK(cudaMemsetAsync(read_src.get(), 1, read_max, stream));
            launch_random_activations(GemmDType::BF16, x.get(), n_max * d, 1.0f, opt.seed, stream);

            for (int64_t n : opt.tokens) {
                const std::string where = cat(shape.name, " ", gemm_dtype_name(dtype), " N=", n);
                std::map<double, Timing> mlp_t, mlp_graph_t;
                for (double r : ratios) {
                    GpuSpenseMlp& m = *mlps.at(r);
                    const auto forward = [&] { m.forward(x.as<bf16>(), y.as<bf16>(), n, stream); };
                    mlp_t[r] = timer.measure(forward);
                    mlp_graph_t[r] = timer.measure_graph(forward);
                    progress.update(++done, where);
                }
                for (double r : ratios) {
                    GpuSpenseMlp& m = *mlps.at(r);
                    const double bytes = m.traffic(n, m.plan_for(n, stream)).forward, floor_ms = bytes / bw * 1e3;
                    mlp_rows.push_back({{"model", shape.name},
                                        {"hidden", d},
                                        {"d_ff", shape.d_ff},
                                        {"dtype", gemm_dtype_name(dtype)},
                                        {"n", n},
                                        {"ratio", r},
                                        {"dense", m.layout().dense},
                                        {"ms", mlp_t[r].json()},
                                        {"speedup_vs_dense", mlp_t.at(1.0).median / mlp_t[r].median},
                                        {"graph_ms", mlp_graph_t[r].json()},
                                        {"graph_speedup_vs_dense", mlp_graph_t.at(1.0).median / mlp_graph_t[r].median},
                                        {"bytes", bytes},
                                        {"floor_ms", floor_ms},
                                        {"bandwidth_fraction", floor_ms / mlp_t[r].median}});
                }
                // The GEMMs alone, on random inputs: dense (cuBLASLt, the rho = 1 MLP's), and the 2:4
                // GEMM of the rho = 0 MLP by each backend: cuSPARSELt on the 16-token padded rows it
                // needs, ours on the n tokens, and the one the MLP's plan picks.
                const GpuSpenseMlp& dm = *mlps.at(1.0);
                const MlpPlan plan = mlps.at(0.0)->plan_for(n, stream);
                const GpuSpenseMlp& sm = *mlps.at(0.0);
                const int64_t padded = SparseGemm::padded_rows(n);
                launch_random_activations(dtype, xq.get(), rows_max * d, 1.0f, opt.seed + 7, stream);
                launch_random_activations(dtype, z.get(), rows_max * f, 1.0f, opt.seed + 8, stream);
                for (const char* layer : {"gate_up", "down"}) {
                    const bool gu = std::string(layer) == "gate_up";
                    const DenseGemm& dg = gu ? *dm.gate_up_dense() : *dm.down_dense();
                    const SparseGemm& sg = gu ? *sm.gate_up_sparse() : *sm.down_sparse();
                    const void* in = gu ? xq.get() : z.get();
                    const SparseRun& run = gu ? plan.gate_up : plan.down;
                    void* outp = gu ? static_cast<void*>(h.get()) : y.get();
                    const Timing td = timer.measure([&] { dg.run(in, outp, n, stream); });
                    const Timing tn = timer.measure([&] { sg.run_backend(SparseBackend::Native, in, outp, n, stream); });
                    Timing tc;
                    if (sg.has_cusparselt()) tc = timer.measure([&] { sg.run_backend(SparseBackend::CuSparseLt, in, outp, padded, stream); });
                    const SparseBackend chosen = run.backend;
                    SPENSE_CHECK(sg.has_native(), "bench gemm: the native format of ", sg.shape().describe(), " was freed");
                    const NativeConfig nc = sg.native()->choice(n, stream).config;
                    const double chosen_ms = chosen == SparseBackend::Native ? tn.median : tc.median;
                    progress.update(++done, where);
                    const int64_t gm = sg.shape().m, gk = sg.shape().k;
                    const double io = double(n * gk) * double(e) + double(n * gm) * 2;
                    const double dense_bytes = double(dg.weight_bytes()) + io, sparse_bytes = double(sg.weight_bytes()) + io;
                    // The read floor: the same bytes streamed by the plain read kernel, timed as the GEMMs are (its
                    // launch, ramp and tail included), so that floor / GEMM is the fraction of what memory allows.
                    const auto read_floor = [&](double bytes) {
                        const size_t b = round_up<size_t>(size_t(bytes), 16);
                        SPENSE_CHECK(b <= read_max, "bench gemm: read floor of ", b, " bytes exceeds its ", read_max, "-byte source");
                        return timer.measure([&] { launch_read_buffer(read_src.get(), b, read_sink.as<float>(), stream); });
                    };
                    const Timing rd = read_floor(dense_bytes), rs = read_floor(sparse_bytes);
                    gemm_rows.push_back({{"model", shape.name},
                                         {"dtype", gemm_dtype_name(dtype)},
                                         {"n", n},
                                         {"layer", layer},
                                         {"m", gm},
                                         {"k", gk},
                                         {"dense_ms", td.json()},
                                         {"dense_k_parts", dg.k_parts(n, stream)},
                                         {"native_ms", tn.json()},
                                         {"native_kernel", native_kernel_name(nc.kernel)},
                                         {"native_split_k", nc.splits},
                                         {"native_k_parts", nc.k_parts()},
                                         {"cusparselt_ms", sg.has_cusparselt() ? tc.json() : nlohmann::json()},
                                         {"cusparselt_rows", padded},
                                         {"mlp_rows", run.rows},
                                         {"chosen", sparse_backend_name(chosen)},
                                         {"chosen_ms", chosen_ms},
                                         {"native_speedup_vs_dense", td.median / tn.median},
                                         {"chosen_speedup_vs_dense", td.median / chosen_ms},
                                         {"dense_bytes", dense_bytes},
                                         {"native_bytes", sparse_bytes},
                                         {"dense_gb_per_s", dense_bytes / td.median * 1e-6},
                                         {"native_gb_per_s", sparse_bytes / tn.median * 1e-6},
                                         {"dense_read_floor_ms", rd.json()},
                                         {"sparse_read_floor_ms", rs.json()},
                                         {"read_floor_speedup", rd.median / rs.median}});
                }
            }
        }
    progress.finish();
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(stream));

    // Tables: the GEMMs (as DEVICE-NOTES.md), then the MLPs.
    out << "GEMMs alone (random inputs), ms, median. Dense: cuBLASLt, as the dense MLP runs it (down may write k's halves apart for "
           "its reader to add: dense_k_parts in the JSON). 2:4: cuSPARSELt (on N rounded up to 16) and native; "
           "x = dense / 2:4; native kernel: the one searched, x split-K (apart: down's split-K ranges write their products apart for "
           "the reader to add, as the dense halves; the MLP tables include that add); chosen: the backend the plain 2:4 MLP's plan picks (the MLP timed with each). GB/s: weight + x + y bytes / time; copy "
        << fmt("%.0f", bw * 1e-9)
        << " GB/s. Read floor: the same bytes (dense, 2:4) streamed by a plain read kernel, timed as the GEMMs (launch, ramp and tail "
           "included); floor x: the speedup a 2:4 GEMM at its floor would have over a dense GEMM at its floor; %: read floor / GEMM\n\n"
        << "| model | dtype | N | layer | dense ms | cuSPARSELt ms | native ms | native kernel | cuSPARSELt x | native x | chosen | chosen x | "
           "dense GB/s | native GB/s | read floor ms, dense / 2:4 | floor x | dense % | chosen % |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (const auto& r : gemm_rows) {
        const double dn = r["dense_ms"]["median"], nv = r["native_ms"]["median"];
        const bool has_cslt = !r["cusparselt_ms"].is_null();
        const double cs = has_cslt ? r["cusparselt_ms"]["median"].get<double>() : 0.0;
        out << "| " << r["model"].get<std::string>() << " | " << r["dtype"].get<std::string>() << " | " << r["n"] << " | "
            << r["layer"].get<std::string>() << " | " << fmt("%.4f", dn) << " | " << (has_cslt ? fmt("%.4f", cs) : "-") << " | "
            << fmt("%.4f", nv) << " | " << r["native_kernel"].get<std::string>() << " x" << r["native_split_k"]
            << (r["native_k_parts"].get<int>() > 1 ? " apart" : "") << " | "
            << (has_cslt ? fmt("%.2fx", dn / cs) : "-") << " | " << fmt("%.2fx", dn / nv) << " | "
            << r["chosen"].get<std::string>() << " | " << fmt("%.2fx", r["chosen_speedup_vs_dense"]) << " | "
            << fmt("%.0f", r["dense_gb_per_s"]) << " | " << fmt("%.0f", r["native_gb_per_s"]) << " | ";
        const double fd = r["dense_read_floor_ms"]["median"], fs = r["sparse_read_floor_ms"]["median"];
        out << fmt("%.4f", fd) << " / " << fmt("%.4f", fs) << " | " << fmt("%.2fx", fd / fs) << " | " << fmt("%.0f%%", 100 * fd / dn) << " | "
            << fmt("%.0f%%", 100 * fs / r["chosen_ms"].get<double>()) << " |\n";
    }
    const auto mlp_table = [&](const char* title, const char* ms_key, const char* speedup_key) {
        out << "\n" << title << ", ms, median (speedup over the dense MLP, %BW)\n\n| model | dtype | N |";
        for (double r : ratios) out << (r == 1.0 ? " dense" : r == 0.0 ? " 2:4 (rho 0)" : cat(" rho ", r).c_str()) << " |";
        out << "\n|---|---|---|";
        for (size_t i = 0; i < ratios.size(); ++i) out << "---|";
        out << "\n";
        for (size_t i = 0; i < mlp_rows.size(); i += ratios.size()) {
            const auto& first = mlp_rows[i];
            out << "| " << first["model"].get<std::string>() << " | " << first["dtype"].get<std::string>() << " | " << first["n"] << " |";
            for (size_t j = 0; j < ratios.size(); ++j) {
                const auto& row = mlp_rows[i + j];
                const double ms = row[ms_key]["median"];
                out << " " << fmt("%.4f", ms) << " (";
                if (ratios[j] != 1.0) out << fmt("%.2fx, ", row[speedup_key]);
                out << fmt("%.0f%%", 100 * row["floor_ms"].get<double>() / ms) << ") |";
            }
            out << "\n";
        }
    };
    mlp_table("Whole MLP (quantize, gate_up, activation, down), launched call by call", "ms", "speedup_vs_dense");
    mlp_table("Whole MLP replayed as a CUDA graph (as a decode step runs it)", "graph_ms", "graph_speedup_vs_dense");

    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    return {{"run", run},
            {"options",
             {{"shapes", [&] {
                   nlohmann::json a = nlohmann::json::array();
                   for (const auto& s : opt.shapes) a.push_back({{"name", s.name}, {"hidden", s.hidden}, {"d_ff", s.d_ff}});
                   return a;
               }()},
              {"tokens", opt.tokens},
              {"ratios", ratios},
              {"align", opt.align},
              {"activation_scales", opt.dynamic_scales ? "dynamic" : "static"},
              {"budget_ms", opt.budget_ms},
              {"seed", opt.seed}}},
            {"copy_bandwidth_bytes_per_s", bw},
            {"gemm", gemm_rows},
            {"mlp", mlp_rows},
            {"plans", ctx.plan_report()},
            {"seconds",
             {{"total", seconds},
              {"weight_build", build_seconds},
              {"search", ctx.stats().search_seconds},
              {"searches", ctx.stats().searches},
              {"plans", ctx.stats().plans}}}};
}

}  // namespace spense::gpu
