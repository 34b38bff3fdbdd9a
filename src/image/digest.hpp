// SHA-256 of bytes in memory, as lower-case hex: the content digests the dataset readers
// give as ImageSource::fingerprint(). Internal to fstore_image.
#pragma once

#include <cstddef>
#include <string>

namespace fstore::detail {

// Throws InternalError when OpenSSL has no SHA-256.
std::string sha256_hex(const void* data, std::size_t size);

}  // namespace fstore::detail
