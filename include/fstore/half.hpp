// IEEE 754 binary16 ("half") conversions on bit patterns.
//
// The store keeps image features as half floats (h5py float16). Buffers carry them as
// std::uint16_t bit patterns; these helpers convert with round-to-nearest-even, the same
// rounding numpy's astype(float16) and torch's .half() use, so values match bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fstore {

std::uint16_t float_to_half(float value) noexcept;
float half_to_float(std::uint16_t bits) noexcept;

void floats_to_halves(const float* in, std::uint16_t* out, std::size_t count) noexcept;
void halves_to_floats(const std::uint16_t* in, float* out, std::size_t count) noexcept;

}  // namespace fstore
