#include <cmath>
#include <cstdint>
#include <limits>

#include <gtest/gtest.h>

#include "fstore/half.hpp"

using fstore::float_to_half;
using fstore::half_to_float;

TEST(Half, EveryHalfRoundTripsThroughFloat) {
    for (std::uint32_t bits = 0; bits <= 0xffffu; ++bits) {
        const auto h = static_cast<std::uint16_t>(bits);
        const float f = half_to_float(h);
        if (std::isnan(f)) {
            EXPECT_TRUE(std::isnan(half_to_float(float_to_half(f))));
        } else {
            EXPECT_EQ(float_to_half(f), h) << "bits=" << bits;
        }
    }
}

TEST(Half, KnownValues) {
    EXPECT_EQ(float_to_half(1.0f), 0x3c00);
    EXPECT_EQ(float_to_half(-2.0f), 0xc000);
    EXPECT_EQ(float_to_half(65504.0f), 0x7bff);
    EXPECT_EQ(float_to_half(65520.0f), 0x7c00);  // rounds up to infinity
    EXPECT_EQ(float_to_half(std::numeric_limits<float>::infinity()), 0x7c00);
    EXPECT_EQ(float_to_half(5.960464477539063e-08f), 0x0001);  // smallest subnormal
    EXPECT_EQ(float_to_half(2.9802322387695312e-08f), 0x0000);  // half of it: ties to even (0)
    EXPECT_FLOAT_EQ(half_to_float(0x3555), 0.333251953125f);
}

TEST(Half, RoundsHalfwayCasesToEven) {
    // 1 + 2^-11 is exactly between 1 and 1 + 2^-10: ties to even gives 1.
    EXPECT_EQ(float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
    // 1 + 3 * 2^-11 is between 1 + 2^-10 (odd) and 1 + 2^-9 (even): goes up.
    EXPECT_EQ(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
}
