#include "gpu/bench_attention.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "gpu/bandwidth.h"
#include "gpu/bench_util.h"
#include "gpu/check.h"
#include "gpu/context.h"
#include "gpu/device_buffer.h"
#include "gpu/kernels.h"

namespace spense::gpu {

namespace {

// `reps` timed calls of fn, each after an L2 eviction (bench_attention.h).
Timing measure(const std::function<void()>& fn, int reps, const DeviceBuffer& flush, float* sink, cudaStream_t stream) {
    for (int i = 0; i < 3; ++i) fn();
    std::vector<cudaEvent_t> start(static_cast<size_t>(reps)), stop(static_cast<size_t>(reps));
    for (auto* v : {&start, &stop})
        for (auto& e : *v) SPENSE_CUDA_CHECK(cudaEventCreate(&e));
    for (int i = 0; i < reps; ++i) {
        launch_read_buffer(flush.get(), flush.bytes(), sink, stream);
        SPENSE_CUDA_CHECK(cudaEventRecord(start[size_t(i)], stream));
        fn();
        SPENSE_CUDA_CHECK(cudaEventRecord(stop[size_t(i)], stream));
    }
    SPENSE_CUDA_CHECK(cudaEventSynchronize(stop.back()));
    std::vector<double> t(static_cast<size_t>(reps));
    for (int i = 0; i < reps; ++i) {
        float ms = 0;
        SPENSE_CUDA_CHECK(cudaEventElapsedTime(&ms, start[size_t(i)], stop[size_t(i)]));
        t[size_t(i)] = ms;
    }
    for (auto* v : {&start, &stop})
        for (auto& e : *v) cudaEventDestroy(e);
    return summarize(std::move(t));
}

}  // namespace

nlohmann::json run_attention_bench(const AttentionBenchOptions& opt, std::ostream& out) {
    SPENSE_CHECK(!opt.lengths.empty() && !opt.chunks.empty() && opt.reps >= 1, "bench attention: nothing to measure");
    const DecodeAttentionShape& s = opt.shape;
    for (int64_t len : opt.lengths)
        SPENSE_CHECK(len >= 1 && len <= s.max_ctx, "bench attention: length ", len, " is outside [1, max_ctx = ", s.max_ctx, "]");
    GpuContext ctx;
    const nlohmann::json run = bench_run_info(ctx);
    print_run_header(out, "bench attention", run);
    const BenchStream owned_stream;
    const cudaStream_t stream = owned_stream.get();

    const double read_bw = read_bandwidth(stream);
    const int64_t q_count = s.batch * s.n_heads * s.head_dim, cache_count = s.batch * s.n_kv_heads * s.max_ctx * s.head_dim;
    const int64_t qkv_width = (s.n_heads + 2 * s.n_kv_heads) * s.head_dim;
    DeviceBuffer qkv(size_t(s.batch * qkv_width) * 2, "attention bench q|k|v"), k(size_t(cache_count) * 2, "attention bench K cache"),
        v(size_t(cache_count) * 2, "attention bench V cache"), lengths(size_t(s.batch) * sizeof(int32_t), "attention bench lengths"),
        values(size_t(q_count) * 2, "attention bench BF16 output"), fp8(size_t(q_count), "attention bench FP8 output"),
        v_bound(size_t(s.batch * s.n_kv_heads) * sizeof(float), "attention bench V bounds"),
        scales(size_t(s.batch) * sizeof(float), "attention bench row scales");
    // Qwen3's work per head: q and k norms (weights 1) and RoPE (every angle 0).
    DeviceBuffer norm(size_t(s.head_dim) * sizeof(float), "attention bench q/k norm"),
        rope(size_t(s.max_ctx * s.head_dim / 2) * sizeof(float2), "attention bench RoPE table");
    launch_random_activations(GemmDType::BF16, qkv.get(), s.batch * qkv_width, 1.0f, opt.seed, stream);
    launch_fill_f32(norm.as<float>(), s.head_dim, 1.0f, stream);
    launch_fill_f32(v_bound.as<float>(), s.batch * s.n_kv_heads, 1.0f, stream);  // the random values lie in [-1, 1]
    std::vector<float2> angles(size_t(s.max_ctx * s.head_dim / 2), float2{1.0f, 0.0f});
    rope.upload(angles.data(), rope.bytes());
    launch_random_activations(GemmDType::BF16, k.get(), cache_count, 1.0f, opt.seed + 1, stream);
    launch_random_activations(GemmDType::BF16, v.get(), cache_count, 1.0f, opt.seed + 2, stream);
    const DeviceBuffer flush(size_t(2 * ctx.props().l2CacheSize), "L2 eviction buffer"), sink(sizeof(float), "L2 eviction sink");
    SPENSE_CUDA_CHECK(cudaMemsetAsync(flush.get(), 1, flush.bytes(), stream));

    out << "## Decode attention: batch " << s.batch << ", " << s.n_heads << " heads over " << s.n_kv_heads << " KV heads of " << s.head_dim
        << ", max_ctx " << s.max_ctx << ", window " << s.window << "\n\n"
        << "Streaming-read bandwidth of this GPU: " << fmt("%.0f", read_bw / 1e9) << " GB/s. Times in us (median of " << opt.reps
        << ", L2 evicted before each).\n\n"
        << "| length | output | chunk | chunks | median | min | max | K+V MB | GB/s | of read BW |\n"
        << "|---|---|---|---|---|---|---|---|---|---|\n";
    nlohmann::json rows = nlohmann::json::array();
    for (int64_t chunk : opt.chunks) {
        DecodeAttentionShape shape = s;
        shape.chunk = chunk;
        const DecodeAttention attn(shape, ctx.props());
        const DeviceBuffer workspace(attn.workspace_bytes(), "attention bench workspace");
        SPENSE_CUDA_CHECK(cudaMemsetAsync(workspace.get(), 0, workspace.bytes(), stream));
        ScaledRows products;
        products.raw = qkv.get();
        products.ld = qkv_width;
        const DecodeAttention::Input input{products, norm.as<float>(), norm.as<float>(), 1e-6f, rope.as<float2>()};
        const int64_t group = s.n_heads / s.n_kv_heads, head_tiles = (group + 15) / 16;
        for (int64_t len : opt.lengths) {
            const std::vector<int32_t> host_lengths(size_t(s.batch), int32_t(len));
            SPENSE_CUDA_CHECK(cudaMemcpyAsync(lengths.get(), host_lengths.data(), host_lengths.size() * sizeof(int32_t),
                                              cudaMemcpyHostToDevice, stream));
            SPENSE_CUDA_CHECK(cudaStreamSynchronize(stream));
            const int64_t keys = s.window > 0 ? std::min(len, s.window) : len;
            const double bytes = double(s.batch * s.n_kv_heads * head_tiles * keys * s.head_dim) * 2.0 * 2.0;
            for (const bool to_fp8 : {false, true}) {
                DecodeAttention::Output o;
                if (to_fp8) {
                    o.fp8 = fp8.as<uint8_t>();
                    o.row_scale = scales.as<float>();
                } else {
                    o.values = values.as<bf16>();
                }
                const Timing t = measure(
                    [&] { attn.run(input, k.as<bf16>(), v.as<bf16>(), v_bound.as<float>(), lengths.as<int32_t>(), o, workspace.get(), stream); }, opt.reps,
                    flush, sink.as<float>(), stream);
                const double gbs = bytes / (t.median * 1e-3) / 1e9;
                const char* name = to_fp8 ? "fp8" : "bf16";
                out << "| " << len << " | " << name << " | " << attn.chunk() << (chunk == 0 ? " (auto)" : "") << " | " << attn.splits() << " | "
                    << fmt("%.1f", t.median * 1e3) << " | " << fmt("%.1f", t.min * 1e3) << " | " << fmt("%.1f", t.max * 1e3) << " | "
                    << fmt("%.1f", bytes / 1e6) << " | " << fmt("%.0f", gbs) << " | " << fmt("%.0f%%", 100.0 * gbs * 1e9 / read_bw) << " |\n";
                rows.push_back({{"length", len},
                                {"output", name},
                                {"chunk", attn.chunk()},
                                {"automatic_chunk", chunk == 0},
                                {"chunks", attn.splits()},
                                {"ms", {{"median", t.median}, {"min", t.min}, {"max", t.max}, {"reps", opt.reps}}},
                                {"kv_bytes", bytes},
                                {"gb_per_s", gbs}});
            }
        }
    }
    out.flush();
    return {{"run", run},
            {"shape",
             {{"batch", s.batch}, {"n_heads", s.n_heads}, {"n_kv_heads", s.n_kv_heads}, {"head_dim", s.head_dim}, {"max_ctx", s.max_ctx}, {"window", s.window}}},
            {"read_bandwidth_gb_per_s", read_bw / 1e9},
            {"measurements", rows}};
}

}  // namespace spense::gpu
