// Host float32 weights to the GEMM dtypes, one convention for every GPU user (the Spense MLP, the
// decode engine):
//   BF16: round to nearest even.
//   FP8 (E4M3): per-output-channel scales scale_j = max_c |W[j, c]| / 448 (1 for a zero row), and
//   codes q = e4m3(W[j, c] / scale_j) with saturation; a GEMM on the codes gives raw products that
//   scale_j turns back into values (gemm.h).
// Zeros are stored as +0 in both: cuSPARSELt tells the kept values of a 2:4 group by their bits,
// and -0 is not 0 bits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gpu/device_buffer.h"
#include "gpu/gemm_dtype.h"

namespace spense::gpu {

// FP8 per-row scales of a row-major [rows, cols] matrix.
std::vector<float> fp8_row_scales(const float* w, int64_t rows, int64_t cols);

// Row-major float [rows, cols] -> a device buffer of BF16 values, or of FP8 codes with the given
// per-row scales (`scale` is ignored for BF16). `what` names the weight in allocation errors.
DeviceBuffer encode_weight(const float* w, int64_t rows, int64_t cols, GemmDType dtype, const std::vector<float>& scale,
                           const std::string& what);

DeviceBuffer upload_floats(const std::vector<float>& v, const std::string& what);

}  // namespace spense::gpu
