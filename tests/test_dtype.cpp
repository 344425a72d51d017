#include <gtest/gtest.h>

#include "core/dtype.h"

TEST(DType, F16RoundTrip) {
    for (uint32_t h = 0; h < 0x10000; ++h) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0) continue;  // NaN payloads need not survive
        EXPECT_EQ(spense::f32_to_f16(spense::f16_to_f32(uint16_t(h))), h) << std::hex << h;
    }
}
