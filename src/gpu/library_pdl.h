// Programmatic dependent launch into the libraries' GEMMs (cuBLASLt, cuSPARSELt) in a CUDA graph.
//
// In the decode step every library GEMM follows one of our latency-bound kernels (a norm, the
// attention, SwiGLU), which let their dependents launch early (launch.h). The libraries launch
// without the PDL attribute, so a captured GEMM's grid starts only once its predecessor has
// completed, unless the graph's edges into it are made programmatic. That is safe only for a
// library run whose kernels all execute griddepcontrol.wait before reading anything the
// predecessor writes. Every sm90 GEMM kernel of cuSPARSELt 0.8.0 does (by its SASS); cuBLASLt
// 13.1's do for some configurations and not for others (the probe below, on an H200, FP8 at 32
// tokens: 6 of gate_up's 8 candidates wait, none of qkv's, o's or down's in that run;
// bench/results/decode-h200-library-pdl.md). So each GEMM plan is probed once, when it is
// built, and only plans that pass get programmatic edges.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include <cuda_runtime.h>

#include "gpu/gemm.h"

namespace spense::gpu {

class GpuContext;

// Token counts up to which plans are probed: decode sizes, where a GEMM takes tens of
// microseconds and its launch latency is a visible part of it.
constexpr int64_t kProgrammaticMaxRows = 256;

// One library GEMM of `shape` on n tokens: reads x, writes y, on `stream`.
using LibraryRun = std::function<void(const void* x, void* y, cudaStream_t stream)>;

// Whether `run` honours a programmatic edge: captured after a kernel that lets its dependents
// launch at once and writes x only 50 us later, it must give what it gives eagerly (within BF16
// rounding; a run that reads x early reads zeros), in each of 3 trials. False for
// n > kProgrammaticMaxRows and while `stream` is capturing. Runs on the context's side stream
// after `stream`'s work, in the search scratch, and synchronizes.
bool waits_for_programmatic_predecessor(GpuContext& ctx, const GemmShape& shape, int64_t n, const LibraryRun& run, cudaStream_t stream);

// While `stream` is capturing: the edges from the kernel nodes that the next captured node will
// depend on become programmatic. Nothing otherwise.
void programmatic_into_next(cudaStream_t stream);

// Replaces each memset node of a captured graph (of up to kMemsetAsKernelMaxBytes) by a kernel node
// that writes the same bytes once its predecessors are done (kernels.h's memset_kernel_params),
// with programmatic edges from the kernel nodes before it. Why: cuBLASLt and cuSPARSELt clear a
// 4-byte counter before their GEMMs of many output tiles (the decode step's gate_up and LM head),
// and the memset node between our kernel and the GEMM cost 5-6 us from the kernel's end to the
// GEMM's start on the H200 (a kernel to kernel edge takes 0.5-0.8; bench/README.md). Larger fills
// are bandwidth work where that latency does not matter. Where every edge into the memset node was
// programmatic (programmatic_into_next before the library call: its plan passed the probe, which
// tests the graph as converted here), the edges from the new kernel to the GEMM's kernel nodes are
// programmatic too, so that the GEMM launches while the kernel before the memset still runs.
constexpr size_t kMemsetAsKernelMaxBytes = 1 << 20;
void memsets_to_kernels(cudaGraph_t graph);

// The executable graph of a captured decode step, or of a part of one: memsets_to_kernels, then
// instantiation. Destroys `graph` in every case; `what` names it in errors.
cudaGraphExec_t instantiate_captured(cudaGraph_t graph, const char* what);

}  // namespace spense::gpu
