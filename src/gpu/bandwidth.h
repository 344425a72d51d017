// Measured device-memory bandwidth, the denominator of every benchmark's floor (bytes a step must
// move over what the memory delivers). Medians of 10 timed runs after 2 warm-ups, CUDA events, on
// buffers of 1 GiB (far beyond L2).
#pragma once

#include <cuda_runtime.h>

namespace spense::gpu {

// Device-to-device cudaMemcpy, counting bytes read plus bytes written, in bytes per second.
double copy_bandwidth(cudaStream_t stream);
// A streaming read of every byte (16-byte loads, launch_read_buffer), in bytes per second: the
// pattern of decoding, which reads weights and the KV cache and writes little.
double read_bandwidth(cudaStream_t stream);

}  // namespace spense::gpu
