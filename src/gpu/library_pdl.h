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

}  // namespace spense::gpu
