#include "gpu/weight_encoding.h"

#include <cuda_fp8.h>

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "gpu/kernels.h"

namespace spense::gpu {

std::vector<float> fp8_row_scales(const float* w, int64_t rows, int64_t cols) {
    std::vector<float> scale(static_cast<size_t>(rows));
    for (int64_t i = 0; i < rows; ++i) {
        float amax = 0;
        for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(w[i * cols + c]));
        scale[size_t(i)] = amax > 0 ? amax / kE4M3Max : 1.0f;
    }
    return scale;
}

DeviceBuffer encode_weight(const float* w, int64_t rows, int64_t cols, GemmDType dtype, const std::vector<float>& scale,
                           const std::string& what) {
    const size_t count = size_t(rows * cols);
    DeviceBuffer out(count * gemm_dtype_bytes(dtype), what);
    if (dtype == GemmDType::BF16) {
        std::vector<uint16_t> h(count);
        for (size_t i = 0; i < count; ++i) h[i] = w[i] == 0.0f ? 0 : f32_to_bf16(w[i]);
        out.upload(h.data(), h.size() * 2);
        return out;
    }
    std::vector<uint8_t> q(count);
    for (int64_t i = 0; i < rows; ++i)
        for (int64_t c = 0; c < cols; ++c) {
            const uint8_t code = __nv_cvt_float_to_fp8(w[size_t(i * cols + c)] / scale[size_t(i)], __NV_SATFINITE, __NV_E4M3);
            q[size_t(i * cols + c)] = (code & 0x7f) == 0 ? 0 : code;
        }
    out.upload(q.data(), q.size());
    return out;
}

DeviceBuffer upload_floats(const std::vector<float>& v, const std::string& what) {
    DeviceBuffer out(v.size() * 4, what);
    out.upload(v.data(), v.size() * 4);
    return out;
}

}  // namespace spense::gpu
