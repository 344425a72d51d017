#include "gpu/kernels.h"

#include <cuda_fp8.h>

#include <algorithm>

#include "gpu/check.h"
#include "gpu/launch.h"

namespace spense::gpu {

namespace {

constexpr int kThreads = 256;
constexpr int kVec = 8;  // elements per thread: 16 bytes of BF16

// Enough blocks for several waves on any current GPU (an H100 holds 132 x 8 such blocks at once);
// the kernels stride over the rest.
constexpr int64_t kMaxBlocks = 4096;
int grid_for(int64_t work) { return int(std::clamp<int64_t>((work + kThreads - 1) / kThreads, 1, kMaxBlocks)); }

__device__ __forceinline__ float scale_from(const unsigned* amax_bits, float static_scale) {
    if (!amax_bits) return static_scale;
    const float amax = __uint_as_float(*amax_bits);
    return amax > 0.0f ? amax / kE4M3Max : 1.0f;
}

__device__ __forceinline__ uint8_t to_e4m3(float v) { return __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3); }

__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// Block-wide max of non-negative floats, then one atomicMax on their bits.
__device__ void block_amax(float v, unsigned* amax_bits) {
    __shared__ float warp_max[kThreads / 32];
    for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        v = threadIdx.x < kThreads / 32 ? warp_max[threadIdx.x] : 0.0f;
        for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
        if (threadIdx.x == 0) atomicMax(amax_bits, __float_as_uint(v));
    }
}

__device__ void write_scale_targets(const ScaleTargets& t, float s, int64_t tid, int64_t stride) {
    if (tid == 0 && t.scale) *t.scale = s;
    for (int64_t i = tid; i < t.columns; i += stride) t.column_scale[i] = t.w_scale[i] * s;
}

// 8 BF16 <-> registers.
struct Bf16x8 {
    uint4 raw;
    __device__ float get(int i) const {
        const bf16* h = reinterpret_cast<const bf16*>(&raw);
        return __bfloat162float(h[i]);
    }
};

__global__ void amax_bf16_kernel(const bf16* x, int64_t count, unsigned* amax_bits) {
    float m = 0.0f;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t v = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; v < count / kVec; v += stride) {
        const Bf16x8 p{reinterpret_cast<const uint4*>(x)[v]};
        for (int i = 0; i < kVec; ++i) m = fmaxf(m, fabsf(p.get(i)));
    }
    block_amax(m, amax_bits);
}

__global__ void quantize_fp8_kernel(const bf16* x, uint8_t* q, int64_t n, int64_t rows, int64_t cols, const unsigned* amax_bits,
                                    float static_scale, ScaleTargets targets) {
    const float s = scale_from(amax_bits, static_scale);
    const int64_t stride = int64_t(gridDim.x) * blockDim.x, tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t per_row = cols / kVec;
    for (int64_t v = tid; v < rows * per_row; v += stride) {
        uint2 out = {0u, 0u};
        if (v / per_row < n) {
            const Bf16x8 p{reinterpret_cast<const uint4*>(x)[v]};
            uint8_t* o = reinterpret_cast<uint8_t*>(&out);
            for (int i = 0; i < kVec; ++i) o[i] = to_e4m3(p.get(i) / s);
        }
        reinterpret_cast<uint2*>(q)[v] = out;
    }
    write_scale_targets(targets, s, tid, stride);
}

// z columns [c, c + 8) of row r: the gate and up columns of z column c are c and s_p + c in the
// sparse region, s_p + c and s_p + k_p + c in the dense one (h = [gate_s | up_s | gate_d | up_d]);
// 8 columns never straddle the regions (widths % 8 == 0). Columns are multiplied by h_scale when
// given (FP8: h holds raw products).
__device__ __forceinline__ void swiglu8(const bf16* h, SwigluLayout l, const float* h_scale, int64_t r, int64_t c, float z[kVec]) {
    const bf16* row = h + r * l.h_width();
    const bool sparse = c < l.sparse;
    const int64_t gc = sparse ? c : l.sparse + c, uc = sparse ? l.sparse + c : l.sparse + l.dense + c;
    const Bf16x8 g{*reinterpret_cast<const uint4*>(row + gc)}, u{*reinterpret_cast<const uint4*>(row + uc)};
    for (int i = 0; i < kVec; ++i) {
        float gi = g.get(i), ui = u.get(i);
        if (h_scale) {
            gi *= h_scale[gc + i];
            ui *= h_scale[uc + i];
        }
        z[i] = silu_times(gi, ui);
    }
}

__global__ void swiglu_bf16_kernel(const bf16* h, bf16* z, int64_t n, int64_t rows, SwigluLayout l) {
    const int64_t per_row = l.z_width() / kVec, stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t v = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; v < rows * per_row; v += stride) {
        const int64_t r = v / per_row, c = (v % per_row) * kVec;
        uint4 out = {0u, 0u, 0u, 0u};
        if (r < n) {
            float zv[kVec];
            swiglu8(h, l, nullptr, r, c, zv);
            bf16* o = reinterpret_cast<bf16*>(&out);
            for (int i = 0; i < kVec; ++i) o[i] = __float2bfloat16_rn(zv[i]);
        }
        reinterpret_cast<uint4*>(z)[v] = out;
    }
}

__global__ void swiglu_amax_kernel(const bf16* h, int64_t n, SwigluLayout l, const float* h_scale, unsigned* amax_bits) {
    const int64_t per_row = l.z_width() / kVec, stride = int64_t(gridDim.x) * blockDim.x;
    float m = 0.0f;
    for (int64_t v = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; v < n * per_row; v += stride) {
        float zv[kVec];
        swiglu8(h, l, h_scale, v / per_row, (v % per_row) * kVec, zv);
        for (int i = 0; i < kVec; ++i) m = fmaxf(m, fabsf(zv[i]));
    }
    block_amax(m, amax_bits);
}

__global__ void swiglu_fp8_kernel(const bf16* h, uint8_t* z, int64_t n, int64_t rows, SwigluLayout l, const float* h_scale,
                                  const unsigned* amax_bits, float static_scale, ScaleTargets targets) {
    const float s = scale_from(amax_bits, static_scale);
    const int64_t per_row = l.z_width() / kVec, stride = int64_t(gridDim.x) * blockDim.x;
    const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    for (int64_t v = tid; v < rows * per_row; v += stride) {
        const int64_t r = v / per_row, c = (v % per_row) * kVec;
        uint2 out = {0u, 0u};
        if (r < n) {
            float zv[kVec];
            swiglu8(h, l, h_scale, r, c, zv);
            uint8_t* o = reinterpret_cast<uint8_t*>(&out);
            for (int i = 0; i < kVec; ++i) o[i] = to_e4m3(zv[i] / s);
        }
        reinterpret_cast<uint2*>(z)[v] = out;
    }
    write_scale_targets(targets, s, tid, stride);
}

__global__ void combine_columns_kernel(bf16* out, const bf16* y, int parts, int64_t part_stride, int64_t rows, int64_t cols,
                                       const float* scale) {
    const int64_t per_row = cols / kVec, stride = int64_t(gridDim.x) * blockDim.x, part_vecs = part_stride / kVec;
    for (int64_t v = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; v < rows * per_row; v += stride) {
        const int64_t c = (v % per_row) * kVec;
        float sum[kVec] = {};
        for (int p = 0; p < parts; ++p) {
            const Bf16x8 q{reinterpret_cast<const uint4*>(y)[p * part_vecs + v]};
            for (int i = 0; i < kVec; ++i) sum[i] += q.get(i);
        }
        uint4 sums;
        bf16* o = reinterpret_cast<bf16*>(&sums);
        for (int i = 0; i < kVec; ++i) o[i] = __float2bfloat16_rn(scale ? sum[i] * scale[c + i] : sum[i]);
        reinterpret_cast<uint4*>(out)[v] = sums;
    }
}

__global__ void count_2to4_violations_kernel(GemmDType dtype, const void* w, int64_t groups, unsigned* count) {
    unsigned bad = 0;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += stride) {
        int nz = 0;
        for (int i = 0; i < 4; ++i)
            nz += dtype == GemmDType::BF16 ? (static_cast<const uint16_t*>(w)[4 * g + i] & 0x7fffu) != 0
                                           : (static_cast<const uint8_t*>(w)[4 * g + i] & 0x7fu) != 0;
        bad += nz > 2;
    }
    if (bad) atomicAdd(count, bad);
}

__device__ __forceinline__ uint64_t mix(uint64_t x) {  // splitmix64's finaliser
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// +-U(a/16, a) from a hash: never zero, so a wrong mask or an unwritten output cannot hide.
__device__ __forceinline__ float random_value(uint64_t seed, uint64_t index, float a) {
    const uint64_t h = mix(seed ^ mix(index));
    const float u = float(h >> 40) * (1.0f / 16777216.0f);
    const float mag = a / 16.0f + u * (a - a / 16.0f);
    return (h & 1) ? mag : -mag;
}

__global__ void random_weights_kernel(GemmDType dtype, void* w, int64_t rows, int64_t cols, int64_t valid_rows, int64_t valid_cols,
                                      bool two_four, float a, uint64_t seed) {
    // The 6 ways to keep 2 of 4, as bit masks of the kept positions.
    constexpr unsigned kKeep[6] = {0x3, 0x5, 0x9, 0x6, 0xa, 0xc};
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < rows * cols; i += stride) {
        const int64_t r = i / cols, c = i % cols;
        float v = 0.0f;
        if (r < valid_rows && c < valid_cols) {
            v = random_value(seed, uint64_t(i), a);
            if (two_four && !((kKeep[mix(seed + 0x2f4 + uint64_t(r * cols + c / 4) * 0x10001) % 6] >> (c % 4)) & 1u)) v = 0.0f;
        }
        if (dtype == GemmDType::BF16)
            static_cast<bf16*>(w)[i] = __float2bfloat16_rn(v);
        else
            static_cast<uint8_t*>(w)[i] = to_e4m3(v * (kE4M3Max / a));
    }
}

__global__ void random_activations_kernel(GemmDType dtype, void* x, int64_t count, float a, uint64_t seed) {
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
        const float v = random_value(seed, uint64_t(i), a);
        if (dtype == GemmDType::BF16)
            static_cast<bf16*>(x)[i] = __float2bfloat16_rn(v);
        else
            static_cast<uint8_t*>(x)[i] = to_e4m3(v * (kE4M3Max / a));
    }
}

__global__ void fill_f32_kernel(float* p, int64_t count, float value) {
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) p[i] = value;
}

__global__ void read_buffer_kernel(const uint4* buf, int64_t count, float* sink) {
    unsigned acc = 0;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
        const uint4 v = buf[i];
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x9e3779b9u) sink[0] = float(acc);
}

// Lets its dependents launch (launch.h), waits delay_ns, then copies.
__global__ void delayed_copy_kernel(uint4* dst, const uint4* src, int64_t count, unsigned delay_ns) {
    allow_dependents();
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); while (t - t0 < delay_ns);
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) dst[i] = src[i];
}

// Element i of a memset node's rows: row i / width, column i % width.
__global__ void memset_kernel(uint8_t* dst, size_t pitch, size_t width, size_t height, unsigned value, unsigned element_size) {
    allow_dependents();  // a dependent through a programmatic edge waits for this grid's completion (library_pdl.h)
    wait_for_predecessor();
    const size_t stride = size_t(gridDim.x) * blockDim.x;
    for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < width * height; i += stride) {
        uint8_t* p = dst + i / width * pitch + i % width * element_size;
        if (element_size == 4)
            *reinterpret_cast<uint32_t*>(p) = value;
        else if (element_size == 2)
            *reinterpret_cast<uint16_t*>(p) = uint16_t(value);
        else
            *p = uint8_t(value);
    }
}

void check_vector_aligned(const void* p, int64_t count, const char* what) {
    SPENSE_CHECK(reinterpret_cast<uintptr_t>(p) % 16 == 0 && count % kVec == 0, what, ": needs a 16-byte aligned buffer of a multiple of ",
                 kVec, " elements, got ", count);
}

}  // namespace

void launch_amax_bf16(const bf16* x, int64_t count, unsigned* amax_bits, cudaStream_t stream) {
    check_vector_aligned(x, count, "amax");
    SPENSE_CUDA_CHECK(cudaMemsetAsync(amax_bits, 0, sizeof(unsigned), stream));
    amax_bf16_kernel<<<grid_for(count / kVec), kThreads, 0, stream>>>(x, count, amax_bits);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "amax_bf16_kernel, ", count, " elements");
}

void launch_quantize_fp8(const bf16* x, uint8_t* q, int64_t n, int64_t rows, int64_t cols, const unsigned* amax_bits,
                         float static_scale, const ScaleTargets& targets, cudaStream_t stream) {
    check_vector_aligned(x, cols, "quantize_fp8");
    const int64_t work = std::max(rows * cols / kVec, targets.columns);
    quantize_fp8_kernel<<<grid_for(work), kThreads, 0, stream>>>(x, q, n, rows, cols, amax_bits, static_scale, targets);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "quantize_fp8_kernel, [", n, " (", rows, "), ", cols, "]");
}

void launch_swiglu_bf16(const bf16* h, bf16* z, int64_t n, int64_t rows, SwigluLayout l, cudaStream_t stream) {
    check_vector_aligned(h, l.z_width(), "swiglu");
    swiglu_bf16_kernel<<<grid_for(rows * l.z_width() / kVec), kThreads, 0, stream>>>(h, z, n, rows, l);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "swiglu_bf16_kernel, ", n, " (", rows, ") rows, regions ", l.sparse, " + ", l.dense);
}

void launch_swiglu_amax(const bf16* h, int64_t n, SwigluLayout l, const float* h_scale, unsigned* amax_bits, cudaStream_t stream) {
    check_vector_aligned(h, l.z_width(), "swiglu_amax");
    SPENSE_CUDA_CHECK(cudaMemsetAsync(amax_bits, 0, sizeof(unsigned), stream));
    swiglu_amax_kernel<<<grid_for(n * l.z_width() / kVec), kThreads, 0, stream>>>(h, n, l, h_scale, amax_bits);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "swiglu_amax_kernel, ", n, " rows, regions ", l.sparse, " + ", l.dense);
}

void launch_swiglu_fp8(const bf16* h, uint8_t* z, int64_t n, int64_t rows, SwigluLayout l, const float* h_scale,
                       const unsigned* amax_bits, float static_scale, const ScaleTargets& targets, cudaStream_t stream) {
    check_vector_aligned(h, l.z_width(), "swiglu_fp8");
    const int64_t work = std::max(rows * l.z_width() / kVec, targets.columns);
    swiglu_fp8_kernel<<<grid_for(work), kThreads, 0, stream>>>(h, z, n, rows, l, h_scale, amax_bits, static_scale, targets);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "swiglu_fp8_kernel, ", n, " (", rows, ") rows, regions ", l.sparse, " + ", l.dense);
}

void launch_combine_columns(bf16* out, const bf16* y, int parts, int64_t part_stride, int64_t rows, int64_t cols, const float* scale,
                            cudaStream_t stream) {
    check_vector_aligned(out, cols, "combine_columns");
    check_vector_aligned(y, cols, "combine_columns");
    SPENSE_CHECK(parts >= 1 && (parts == 1 || part_stride % kVec == 0), "combine_columns: ", parts, " parts ", part_stride,
                 " elements apart (a multiple of ", kVec, " needed)");
    combine_columns_kernel<<<grid_for(rows * cols / kVec), kThreads, 0, stream>>>(out, y, parts, part_stride, rows, cols, scale);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "combine_columns_kernel [", rows, ", ", cols, "], ", parts, " parts", scale ? ", scaled" : "");
}

void launch_count_2to4_violations(GemmDType dtype, const void* w, int64_t rows, int64_t cols, unsigned* count, cudaStream_t stream) {
    SPENSE_CHECK(cols % 4 == 0, "2:4 check: ", cols, " columns are not whole groups of 4");
    SPENSE_CUDA_CHECK(cudaMemsetAsync(count, 0, sizeof(unsigned), stream));
    count_2to4_violations_kernel<<<grid_for(rows * cols / 4), kThreads, 0, stream>>>(dtype, w, rows * cols / 4, count);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "count_2to4_violations_kernel [", rows, ", ", cols, "]");
}

void launch_random_weights(GemmDType dtype, void* w, int64_t rows, int64_t cols, int64_t valid_rows, int64_t valid_cols, bool two_four,
                           float amplitude, uint64_t seed, cudaStream_t stream) {
    SPENSE_CHECK(!two_four || cols % 4 == 0, "random 2:4 weights need a multiple of 4 columns, got ", cols);
    random_weights_kernel<<<grid_for(rows * cols), kThreads, 0, stream>>>(dtype, w, rows, cols, valid_rows, valid_cols, two_four,
                                                                        amplitude, seed);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "random_weights_kernel [", rows, ", ", cols, "]");
}

void launch_random_activations(GemmDType dtype, void* x, int64_t count, float amplitude, uint64_t seed, cudaStream_t stream) {
    random_activations_kernel<<<grid_for(count), kThreads, 0, stream>>>(dtype, x, count, amplitude, seed);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "random_activations_kernel, ", count, " elements");
}

void launch_fill_f32(float* p, int64_t count, float value, cudaStream_t stream) {
    fill_f32_kernel<<<grid_for(count), kThreads, 0, stream>>>(p, count, value);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "fill_f32_kernel, ", count, " elements");
}

void launch_read_buffer(const void* buf, size_t bytes, float* sink, cudaStream_t stream) {
    SPENSE_CHECK(reinterpret_cast<uintptr_t>(buf) % 16 == 0 && bytes % 16 == 0, "read_buffer: needs 16-byte aligned whole vectors");
    read_buffer_kernel<<<grid_for(int64_t(bytes / 16)), kThreads, 0, stream>>>(static_cast<const uint4*>(buf), int64_t(bytes / 16), sink);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "read_buffer_kernel, ", bytes, " bytes");
}

void launch_delayed_copy(void* dst, const void* src, size_t bytes, unsigned delay_ns, cudaStream_t stream) {
    SPENSE_CHECK(reinterpret_cast<uintptr_t>(dst) % 16 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0 && bytes % 16 == 0,
                 "delayed_copy: needs 16-byte aligned whole vectors");
    // Few enough CTAs to be resident at once: the dependents launch once all have started.
    delayed_copy_kernel<<<64, kThreads, 0, stream>>>(static_cast<uint4*>(dst), static_cast<const uint4*>(src), int64_t(bytes / 16), delay_ns);
    SPENSE_CUDA_CHECK(cudaGetLastError(), "delayed_copy_kernel, ", bytes, " bytes");
}

cudaKernelNodeParamsV2 memset_kernel_params(const cudaMemsetParams& m, MemsetKernelArgs& args) {
    SPENSE_CHECK(m.elementSize == 1 || m.elementSize == 2 || m.elementSize == 4, "a memset node of ", m.elementSize, "-byte elements");
    args.dst = m.dst;
    args.pitch = m.height > 1 ? m.pitch : m.width * m.elementSize;
    args.width = m.width;
    args.height = m.height;
    args.value = m.value;
    args.element_size = m.elementSize;
    args.pointers[0] = &args.dst;
    args.pointers[1] = &args.pitch;
    args.pointers[2] = &args.width;
    args.pointers[3] = &args.height;
    args.pointers[4] = &args.value;
    args.pointers[5] = &args.element_size;
    cudaKernelNodeParamsV2 p{};
    p.func = reinterpret_cast<void*>(memset_kernel);
    p.gridDim = dim3(unsigned(grid_for(int64_t(m.width * m.height))));
    p.blockDim = dim3(kThreads);
    p.kernelParams = args.pointers;
    return p;
}

}  // namespace spense::gpu
