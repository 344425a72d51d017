// Programmatic edges into library GEMMs (gpu/library_pdl.h). The probe must tell a consumer that
// reads its input early from one that waits; memset nodes turned into kernels must still write
// after their predecessors; and a GEMM captured after a predecessor that lets it launch at once and
// writes its input 50 us later must read that input, at the decode step's shapes (Qwen3-32B's four
// GEMMs at 32 tokens, BF16 and FP8, with the algorithms the searches pick), its memsets made kernels.
#include <gtest/gtest.h>

#ifdef SPENSE_HAS_CUDA

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "core/dtype.h"
#include "gpu/check.h"
#include "gpu/context.h"
#include "gpu/gemm.h"
#include "gpu/kernels.h"
#include "gpu/library_pdl.h"
#include "test_gpu.h"

namespace spense {
namespace {

using gpu::DeviceBuffer;
using gpu::GemmDType;
using gpu::GemmOut;
using gpu::GemmShape;

std::vector<float> download_outputs(const DeviceBuffer& y, GemmOut out) {
    if (out == GemmOut::F32) {
        std::vector<float> v(y.bytes() / 4);
        y.download(v.data(), y.bytes());
        return v;
    }
    std::vector<uint16_t> h(y.bytes() / 2);
    y.download(h.data(), y.bytes());
    std::vector<float> v(h.size());
    std::transform(h.begin(), h.end(), v.begin(), bf16_to_f32);
    return v;
}

// The data of every edge of `graph` (their types: programmatic or plain).
std::vector<cudaGraphEdgeData> edge_data(cudaGraph_t graph) {
    size_t edges = 0;
    SPENSE_CUDA_CHECK(cudaGraphGetEdges(graph, nullptr, nullptr, nullptr, &edges));
    std::vector<cudaGraphNode_t> from(edges), to(edges);
    std::vector<cudaGraphEdgeData> data(edges);
    SPENSE_CUDA_CHECK(cudaGraphGetEdges(graph, from.data(), to.data(), data.data(), &edges));
    return data;
}

struct Captured {
    double max_error = 0, max_value = 0;  // against the eager run
    int programmatic_edges = 0;           // in the captured graph
};

// `run` eagerly on x_src, and captured after a delayed copy x_src -> x, three times.
Captured run_after_delayed_copy(const GemmShape& s, int64_t n, const std::function<void(const void*, void*, cudaStream_t)>& run,
                                cudaStream_t st) {
    const size_t xb = size_t(n * s.ldb) * gpu::gemm_dtype_bytes(s.dtype), yb = size_t(n * s.ldc) * gpu::gemm_out_bytes(s.out);
    DeviceBuffer x_src(xb, "x source"), x(xb, "x"), y_ref(yb, "y reference"), y(yb, "y");
    gpu::launch_random_activations(s.dtype, x_src.get(), n * s.ldb, 1.0f, 7, st);
    SPENSE_CUDA_CHECK(cudaMemsetAsync(y_ref.get(), 0, yb, st));
    run(x_src.get(), y_ref.get(), st);
    cudaGraph_t graph;
    SPENSE_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    gpu::launch_delayed_copy(x.get(), x_src.get(), xb, 50000, st);
    run(x.get(), y.get(), st);
    SPENSE_CUDA_CHECK(cudaStreamEndCapture(st, &graph));
    gpu::memsets_to_kernels(graph);  // as the decode step's graph (the libraries clear tile counters so)
    Captured c;
    for (const auto& e : edge_data(graph)) c.programmatic_edges += e.type == cudaGraphDependencyTypeProgrammatic;
    cudaGraphExec_t exec;
    SPENSE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    cudaGraphDestroy(graph);
    SPENSE_CUDA_CHECK(cudaStreamSynchronize(st));
    const std::vector<float> ref = download_outputs(y_ref, s.out);
    for (int rep = 0; rep < 3; ++rep) {
        SPENSE_CUDA_CHECK(cudaMemsetAsync(x.get(), 0, xb, st));
        SPENSE_CUDA_CHECK(cudaMemsetAsync(y.get(), 0, yb, st));
        SPENSE_CUDA_CHECK(cudaGraphLaunch(exec, st));
        SPENSE_CUDA_CHECK(cudaStreamSynchronize(st));
        const std::vector<float> got = download_outputs(y, s.out);
        for (size_t i = 0; i < ref.size(); ++i) {
            c.max_error = std::max(c.max_error, double(std::fabs(got[i] - ref[i])));
            c.max_value = std::max(c.max_value, double(std::fabs(ref[i])));
        }
    }
    cudaGraphExecDestroy(exec);
    return c;
}

struct Stream {
    cudaStream_t s = nullptr;
    Stream() { SPENSE_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
    ~Stream() { cudaStreamDestroy(s); }
};

TEST(GpuLibraryPdl, ProbeTellsAnEarlyReaderFromAWaitingOne) {
    REQUIRE_GPU();
    gpu::GpuContext ctx;
    Stream st;
    // A consumer that copies x into the first bytes of y without waiting: it reads x early.
    const GemmShape s{GemmDType::FP8, 64, 64, 64, 64, false, GemmOut::BF16};
    const auto early_reader = [&](const void* x, void* y, cudaStream_t stream) { gpu::launch_delayed_copy(y, x, 32 * 64, 0, stream); };
    EXPECT_FALSE(gpu::waits_for_programmatic_predecessor(ctx, s, 32, early_reader, st.s));
    const Captured c = run_after_delayed_copy(s, 32, [&](const void* x, void* y, cudaStream_t stream) {
        gpu::programmatic_into_next(stream);
        early_reader(x, y, stream);
    }, st.s);
    EXPECT_EQ(c.programmatic_edges, 1);
    EXPECT_GT(c.max_error, 0.5 * c.max_value) << "the early reader should have read zeros";
    // Past kProgrammaticMaxRows nothing is probed.
    EXPECT_FALSE(gpu::waits_for_programmatic_predecessor(ctx, s, gpu::kProgrammaticMaxRows + 1, early_reader, st.s));
}

// Memset nodes of 1-, 2- and 4-byte elements, one of them 2D, after a kernel that lets its
// dependents launch at once and writes the same bytes 50 us later: as kernel nodes with
// programmatic edges they must still write after it, as the memset nodes did.
TEST(GpuLibraryPdl, MemsetNodesBecomeKernelsThatWaitForTheirPredecessors) {
    REQUIRE_GPU();
    Stream st;
    constexpr size_t kBytes = 4096, kPitch = 256;
    DeviceBuffer src(kBytes, "source"), dst(kBytes, "destination");
    SPENSE_CUDA_CHECK(cudaMemsetAsync(src.get(), 0xab, kBytes, st.s));
    cudaGraph_t graph;
    SPENSE_CUDA_CHECK(cudaStreamBeginCapture(st.s, cudaStreamCaptureModeThreadLocal));
    gpu::launch_delayed_copy(dst.get(), src.get(), kBytes, 50000, st.s);
    SPENSE_CUDA_CHECK(cudaStreamEndCapture(st.s, &graph));
    cudaGraphNode_t copy;
    size_t count = 1;
    SPENSE_CUDA_CHECK(cudaGraphGetNodes(graph, &copy, &count));
    ASSERT_EQ(count, 1u);
    auto* d = static_cast<uint8_t*>(dst.get());
    struct Fill {
        size_t offset, pitch, width, height;
        unsigned value, element_size;
    };
    const std::vector<Fill> fills{{16, kPitch, 40, 8, 0x11, 1}, {3000, 0, 7, 1, 0x2233, 2}, {3600, 0, 5, 1, 0x44556677u, 4}};
    for (const Fill& f : fills) {
        cudaMemsetParams m{};
        m.dst = d + f.offset;
        m.pitch = f.pitch;
        m.value = f.value;
        m.elementSize = f.element_size;
        m.width = f.width;
        m.height = f.height;
        cudaGraphNode_t node;
        SPENSE_CUDA_CHECK(cudaGraphAddMemsetNode(&node, graph, &copy, 1, &m));
    }
    gpu::memsets_to_kernels(graph);
    SPENSE_CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &count));
    std::vector<cudaGraphNode_t> nodes(count);
    SPENSE_CUDA_CHECK(cudaGraphGetNodes(graph, nodes.data(), &count));
    int kernels = 0;
    for (cudaGraphNode_t n : nodes) {
        cudaGraphNodeType type;
        SPENSE_CUDA_CHECK(cudaGraphNodeGetType(n, &type));
        EXPECT_NE(type, cudaGraphNodeTypeMemset);
        kernels += type == cudaGraphNodeTypeKernel;
    }
    EXPECT_EQ(kernels, 4);
    const std::vector<cudaGraphEdgeData> data = edge_data(graph);
    EXPECT_EQ(data.size(), 3u);
    for (const auto& e : data) EXPECT_EQ(e.type, cudaGraphDependencyTypeProgrammatic);

    std::vector<uint8_t> want(kBytes, 0xab);
    for (const Fill& f : fills)
        for (size_t r = 0; r < f.height; ++r)
            for (size_t i = 0; i < f.width; ++i)
                for (unsigned b = 0; b < f.element_size; ++b) want[f.offset + r * f.pitch + i * f.element_size + b] = uint8_t(f.value >> (8 * b));
    cudaGraphExec_t exec;
    SPENSE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    cudaGraphDestroy(graph);
    for (int rep = 0; rep < 3; ++rep) {
        SPENSE_CUDA_CHECK(cudaMemsetAsync(dst.get(), 0, kBytes, st.s));
        SPENSE_CUDA_CHECK(cudaGraphLaunch(exec, st.s));
        std::vector<uint8_t> got(kBytes);
        SPENSE_CUDA_CHECK(cudaStreamSynchronize(st.s));
        dst.download(got.data(), kBytes);
        EXPECT_EQ(got, want) << "replay " << rep;
    }
    cudaGraphExecDestroy(exec);
}

// A memset captured between two kernels, as a library clears its counter before its GEMM: the
// edge out of its kernel becomes programmatic exactly where every edge into the memset was (the
// library call was marked safe for one by programmatic_into_next). Whether the GEMM then still
// reads after its predecessor is what the library tests below check.
TEST(GpuLibraryPdl, MemsetKernelPassesOnTheProgrammaticEdgeIntoItsNode) {
    REQUIRE_GPU();
    Stream st;
    DeviceBuffer a(256, "a"), b(256, "b"), counter(4, "counter");
    for (bool marked : {false, true}) {
        cudaGraph_t graph;
        SPENSE_CUDA_CHECK(cudaStreamBeginCapture(st.s, cudaStreamCaptureModeThreadLocal));
        gpu::launch_delayed_copy(b.get(), a.get(), 256, 0, st.s);
        if (marked) gpu::programmatic_into_next(st.s);
        SPENSE_CUDA_CHECK(cudaMemsetAsync(counter.get(), 0, 4, st.s));
        gpu::launch_delayed_copy(a.get(), b.get(), 256, 0, st.s);
        SPENSE_CUDA_CHECK(cudaStreamEndCapture(st.s, &graph));
        gpu::memsets_to_kernels(graph);
        const std::vector<cudaGraphEdgeData> data = edge_data(graph);
        ASSERT_EQ(data.size(), 2u);
        int programmatic = 0;
        for (const auto& e : data) programmatic += e.type == cudaGraphDependencyTypeProgrammatic;
        EXPECT_EQ(programmatic, marked ? 2 : 1) << (marked ? "marked" : "plain");
        cudaGraphDestroy(graph);
    }
}

// Qwen3-32B's qkv, o, gate_up and down at 32 tokens, FP8 and BF16: check(shape, weight, n) with a
// random weight (2:4 for the sparse GEMMs) and the output type the decode engine asks of each
// library (float32 from BF16 dense GEMMs; cuSPARSELt writes BF16).
void for_each_decode_gemm(bool two_four, cudaStream_t st, const std::function<void(const GemmShape&, DeviceBuffer, int64_t)>& check) {
    for (GemmDType t : {GemmDType::FP8, GemmDType::BF16})
        for (auto [m, k] : std::vector<std::pair<int64_t, int64_t>>{{10240, 5120}, {5120, 8192}, {51200, 5120}, {5120, 25600}}) {
            const GemmShape s{t, m, k, k, m, false, t == GemmDType::BF16 && !two_four ? GemmOut::F32 : GemmOut::BF16};
            DeviceBuffer w(size_t(m * k) * gpu::gemm_dtype_bytes(t), "weight");
            gpu::launch_random_weights(t, w.get(), m, k, m, k, two_four, 1.0f / 64, 3, st);
            check(s, std::move(w), 32);
        }
}

TEST(GpuLibraryPdl, CuBlasLtReadsItsInputAfterAProgrammaticPredecessor) {
    REQUIRE_GPU();
    gpu::GpuContext ctx;
    Stream st;
    for_each_decode_gemm(false, st.s, [&](const GemmShape& s, DeviceBuffer w, int64_t n) {
        const gpu::DenseGemm g(ctx, s, std::move(w));
        const Captured c = run_after_delayed_copy(s, n, [&](const void* x, void* y, cudaStream_t stream) { g.run(x, y, n, stream); }, st.s);
        EXPECT_LE(c.max_error, 1e-2 * c.max_value) << s.describe();
        std::printf("cuBLASLt %s n=%lld: %s\n", s.describe().c_str(), (long long)n,
                    c.programmatic_edges > 0 ? "programmatic" : "plain edge (its kernels read early)");
    });
}

#ifdef SPENSE_HAS_CUSPARSELT
// Every sm90 GEMM kernel of cuSPARSELt 0.8.0 waits (its SASS), so each plan should take the edge.
TEST(GpuLibraryPdl, CuSparseLtReadsItsInputAfterAProgrammaticPredecessor) {
    REQUIRE_GPU();
    gpu::GpuContext ctx;
    Stream st;
    for_each_decode_gemm(true, st.s, [&](const GemmShape& s, DeviceBuffer w, int64_t n) {
        const gpu::SparseGemm g(ctx, s, w, st.s);
        const Captured c = run_after_delayed_copy(
            s, n, [&](const void* x, void* y, cudaStream_t stream) { g.run_backend(gpu::SparseBackend::CuSparseLt, x, y, n, stream); }, st.s);
        EXPECT_LE(c.max_error, 1e-2 * c.max_value) << s.describe();
        EXPECT_GT(c.programmatic_edges, 0) << s.describe();
    });
}
#endif

}  // namespace
}  // namespace spense

#else
TEST(GpuLibraryPdl, BuiltWithoutCuda) { GTEST_SKIP() << "spense was built without CUDA (no nvcc at configure time)"; }
#endif
