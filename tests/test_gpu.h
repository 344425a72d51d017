// What the GPU test files share: they run on the device machine and skip themselves, rather than
// fail, where no CUDA device is present.
#pragma once

#include <gtest/gtest.h>

#include "gpu/context.h"

#define REQUIRE_GPU()                                                                    \
    do {                                                                                 \
        if (!::spense::gpu::cuda_device_available()) GTEST_SKIP() << "no CUDA device";   \
    } while (0)
