// Message digests through OpenSSL, as lower-case hex: SHA-256 for what the store records
// (model archives, prompt sets, template texts, labels CSVs, npz member tables) and MD5 for
// MedMNIST's published checksums.
//
//   fstore::Digest sha = fstore::Digest::sha256();
//   sha.update(bytes, size);
//   std::string hex = sha.hex();  // finishes; reset() starts again
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace fstore {

class Digest {
public:
    // Throw InternalError when this OpenSSL lacks the algorithm (MD5 in FIPS mode).
    static Digest sha256();
    static Digest md5();

    void update(const void* data, std::size_t size);
    void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
    // The digest of everything since construction or reset(); call reset() before reuse.
    std::string hex();
    void reset();

    Digest(Digest&&) noexcept;
    Digest& operator=(Digest&&) noexcept;
    ~Digest();

private:
    struct Context;
    explicit Digest(const void* algorithm, const char* name);
    std::unique_ptr<Context> context_;
};

// SHA-256 of bytes in memory.
std::string sha256_hex(const void* data, std::size_t size);

}  // namespace fstore
