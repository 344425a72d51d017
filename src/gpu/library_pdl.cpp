#include "gpu/library_pdl.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "gpu/check.h"
#include "gpu/context.h"
#include "gpu/kernels.h"

namespace spense::gpu {

namespace {

size_t round16(size_t bytes) { return (bytes + 15) / 16 * 16; }

bool capturing(cudaStream_t stream) {
    cudaStreamCaptureStatus status;
    SPENSE_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
    return status != cudaStreamCaptureStatusNone;
}

std::vector<float> download_outputs(const void* y, int64_t count, GemmOut out) {
    std::vector<float> v(static_cast<size_t>(count));
    if (out == GemmOut::F32) {
        SPENSE_CUDA_CHECK(cudaMemcpy(v.data(), y, v.size() * 4, cudaMemcpyDeviceToHost));
        return v;
    }
    std::vector<uint16_t> h(v.size());
    SPENSE_CUDA_CHECK(cudaMemcpy(h.data(), y, h.size() * 2, cudaMemcpyDeviceToHost));
    std::transform(h.begin(), h.end(), v.begin(), bf16_to_f32);
    return v;
}

bool is_kernel_node(cudaGraphNode_t node) {
    cudaGraphNodeType type;
    SPENSE_CUDA_CHECK(cudaGraphNodeGetType(node, &type), "graph node type");
    return type == cudaGraphNodeTypeKernel;
}

// A plain edge made programmatic (the caller checks that both its ends are kernel nodes).
void make_programmatic(cudaGraphEdgeData& e) {
    if (e.type != cudaGraphDependencyTypeDefault) return;
    e.from_port = cudaGraphKernelNodePortProgrammatic;
    e.type = cudaGraphDependencyTypeProgrammatic;
}

// The graph: the delayed copy x_src -> x, then run_on_x through programmatic edges. Null where the
// library refuses to be captured so (a programmatic edge into a node that is not a kernel).
cudaGraphExec_t capture_probe(const std::function<void(cudaStream_t)>& run_on_x, void* x, const void* x_src, size_t x_bytes,
                              cudaStream_t side) {
    constexpr unsigned kDelayNs = 50000;
    SPENSE_CUDA_CHECK(cudaStreamBeginCapture(side, cudaStreamCaptureModeThreadLocal), "capturing the programmatic-edge probe");
    cudaGraph_t graph = nullptr;
    try {
        launch_delayed_copy(x, x_src, x_bytes, kDelayNs, side);
        programmatic_into_next(side);
        run_on_x(side);
    } catch (const Error&) {
        cudaStreamEndCapture(side, &graph);
        if (graph) cudaGraphDestroy(graph);
        cudaGetLastError();
        return nullptr;
    }
    SPENSE_CUDA_CHECK(cudaStreamEndCapture(side, &graph), "capturing the programmatic-edge probe");
    try {
        return instantiate_captured(graph, "the programmatic-edge probe");  // as the decode step's graphs are
    } catch (const Error&) {
        cudaGetLastError();
        return nullptr;
    }
}

}  // namespace

void programmatic_into_next(cudaStream_t stream) {
    cudaStreamCaptureStatus status;
    const cudaGraphNode_t* deps = nullptr;
    const cudaGraphEdgeData* data = nullptr;
    size_t count = 0;
    SPENSE_CUDA_CHECK(cudaStreamGetCaptureInfo(stream, &status, nullptr, nullptr, &deps, &data, &count), "capture dependencies");
    if (status != cudaStreamCaptureStatusActive || count == 0) return;
    std::vector<cudaGraphNode_t> nodes(deps, deps + count);
    std::vector<cudaGraphEdgeData> edges(count);
    for (size_t i = 0; i < count; ++i) {
        if (data) edges[i] = data[i];
        if (is_kernel_node(nodes[i])) make_programmatic(edges[i]);
    }
    SPENSE_CUDA_CHECK(cudaStreamUpdateCaptureDependencies(stream, nodes.data(), edges.data(), count, cudaStreamSetCaptureDependencies),
                      "programmatic edges into a library GEMM");
}

void memsets_to_kernels(cudaGraph_t graph) {
    size_t count = 0;
    SPENSE_CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &count), "graph nodes");
    std::vector<cudaGraphNode_t> nodes(count);
    SPENSE_CUDA_CHECK(cudaGraphGetNodes(graph, nodes.data(), &count), "graph nodes");
    for (cudaGraphNode_t node : nodes) {
        cudaGraphNodeType type;
        SPENSE_CUDA_CHECK(cudaGraphNodeGetType(node, &type), "graph node type");
        if (type != cudaGraphNodeTypeMemset) continue;
        cudaMemsetParams m{};
        SPENSE_CUDA_CHECK(cudaGraphMemsetNodeGetParams(node, &m), "memset node");
        if (m.width * m.height * m.elementSize > kMemsetAsKernelMaxBytes) continue;

        size_t n_in = 0, n_out = 0;
        SPENSE_CUDA_CHECK(cudaGraphNodeGetDependencies(node, nullptr, nullptr, &n_in), "memset node dependencies");
        SPENSE_CUDA_CHECK(cudaGraphNodeGetDependentNodes(node, nullptr, nullptr, &n_out), "memset node dependents");
        std::vector<cudaGraphNode_t> in(n_in), out(n_out);
        std::vector<cudaGraphEdgeData> in_edges(n_in), out_edges(n_out);
        SPENSE_CUDA_CHECK(cudaGraphNodeGetDependencies(node, in.data(), in_edges.data(), &n_in), "memset node dependencies");
        SPENSE_CUDA_CHECK(cudaGraphNodeGetDependentNodes(node, out.data(), out_edges.data(), &n_out), "memset node dependents");
        const bool library_waits = n_in > 0 && std::all_of(in_edges.begin(), in_edges.end(), [](const cudaGraphEdgeData& e) {
            return e.type == cudaGraphDependencyTypeProgrammatic;
        });
        for (size_t i = 0; i < n_out && library_waits; ++i)
            if (is_kernel_node(out[i])) make_programmatic(out_edges[i]);
        for (size_t i = 0; i < n_in; ++i)
            if (is_kernel_node(in[i])) make_programmatic(in_edges[i]);
        MemsetKernelArgs args;
        cudaGraphNodeParams params{};
        params.type = cudaGraphNodeTypeKernel;
        params.kernel = memset_kernel_params(m, args);
        cudaGraphNode_t kernel = nullptr;
        SPENSE_CUDA_CHECK(cudaGraphAddNode(&kernel, graph, in.data(), in_edges.data(), n_in, &params), "the kernel of a memset node");
        const std::vector<cudaGraphNode_t> from(n_out, kernel);
        if (n_out > 0)
            SPENSE_CUDA_CHECK(cudaGraphAddDependencies(graph, from.data(), out.data(), out_edges.data(), n_out), "the kernel of a memset node");
        SPENSE_CUDA_CHECK(cudaGraphDestroyNode(node), "a memset node");
    }
}

cudaGraphExec_t instantiate_captured(cudaGraph_t graph, const char* what) {
    cudaGraphExec_t exec = nullptr;
    try {
        memsets_to_kernels(graph);
    } catch (...) {
        cudaGraphDestroy(graph);
        throw;
    }
    const cudaError_t st = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    SPENSE_CUDA_CHECK(st, "instantiating ", what);
    return exec;
}

bool waits_for_programmatic_predecessor(GpuContext& ctx, const GemmShape& s, int64_t n, const LibraryRun& run, cudaStream_t stream) {
    if (n > kProgrammaticMaxRows || capturing(stream)) return false;
    const size_t xb = round16(size_t(n * s.ldb) * gemm_dtype_bytes(s.dtype)), yb = round16(size_t(s.out_elements(n)) * gemm_out_bytes(s.out));
    auto* scratch = static_cast<uint8_t*>(ctx.search_scratch(2 * xb + 2 * yb));
    uint8_t *x_src = scratch, *x = scratch + xb, *y_ref = scratch + 2 * xb, *y = y_ref + yb;
    cudaStream_t side = ctx.fork(stream);
    launch_random_activations(s.dtype, x_src, n * s.ldb, 1.0f, 17, side);
    SPENSE_CUDA_CHECK(cudaMemsetAsync(y_ref, 0, yb, side));
    run(x_src, y_ref, side);  // eagerly; also grows the side stream's workspace before the capture
    const cudaGraphExec_t exec = capture_probe([&](cudaStream_t st) { run(x, y, st); }, x, x_src, xb, side);
    // Every trial must give the eager result (a run that reads x early reads zeros).
    constexpr int kTrials = 3;
    bool waits = exec != nullptr;
    if (waits) {
        SPENSE_CUDA_CHECK(cudaStreamSynchronize(side), "the programmatic-edge probe of ", s.describe(), " n=", n);
        const std::vector<float> ref = download_outputs(y_ref, s.out_elements(n), s.out);
        for (int trial = 0; waits && trial < kTrials; ++trial) {
            SPENSE_CUDA_CHECK(cudaMemsetAsync(x, 0, xb, side));
            SPENSE_CUDA_CHECK(cudaMemsetAsync(y, 0, yb, side));
            SPENSE_CUDA_CHECK(cudaGraphLaunch(exec, side), "the programmatic-edge probe of ", s.describe(), " n=", n);
            SPENSE_CUDA_CHECK(cudaStreamSynchronize(side), "the programmatic-edge probe of ", s.describe(), " n=", n);
            const std::vector<float> got = download_outputs(y, s.out_elements(n), s.out);
            double err = 0, top = 0;
            for (size_t i = 0; i < ref.size(); ++i) {
                err = std::max(err, double(std::fabs(got[i] - ref[i])));
                top = std::max(top, double(std::fabs(ref[i])));
            }
            waits = std::isfinite(err) && err <= 1e-2 * top;  // a BF16 rounding step of the largest output is 4e-3 of it
        }
        cudaGraphExecDestroy(exec);
    }
    ctx.join(stream);
    return waits;
}

}  // namespace spense::gpu
