#include "fstore/digest.hpp"

#include <openssl/evp.h>

#include "fstore/error.hpp"

namespace fstore {

struct Digest::Context {
    struct Free {
        void operator()(EVP_MD_CTX* ctx) const noexcept { EVP_MD_CTX_free(ctx); }
    };
    std::unique_ptr<EVP_MD_CTX, Free> ctx{EVP_MD_CTX_new()};
    const EVP_MD* algorithm = nullptr;
    const char* name = "";
};

Digest::Digest(const void* algorithm, const char* name) : context_(std::make_unique<Context>()) {
    context_->algorithm = static_cast<const EVP_MD*>(algorithm);
    context_->name = name;
    if (!context_->ctx) throw InternalError("OpenSSL EVP_MD_CTX_new failed");
    reset();
}

Digest Digest::sha256() { return Digest(EVP_sha256(), "SHA-256"); }
Digest Digest::md5() { return Digest(EVP_md5(), "MD5"); }

Digest::Digest(Digest&&) noexcept = default;
Digest& Digest::operator=(Digest&&) noexcept = default;
Digest::~Digest() = default;

void Digest::reset() {
    if (context_->algorithm == nullptr || EVP_DigestInit_ex(context_->ctx.get(), context_->algorithm, nullptr) != 1) {
        throw InternalError(std::string("OpenSSL cannot initialise ") + context_->name + " (FIPS mode?): reinstall libssl");
    }
}

void Digest::update(const void* data, std::size_t size) { EVP_DigestUpdate(context_->ctx.get(), data, size); }

std::string Digest::hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(context_->ctx.get(), digest, &length) != 1) {
        throw InternalError(std::string("OpenSSL cannot compute ") + context_->name);
    }
    static const char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(2 * length);
    for (unsigned int i = 0; i < length; ++i) {
        out += digits[digest[i] >> 4];
        out += digits[digest[i] & 15];
    }
    return out;
}

std::string sha256_hex(const void* data, std::size_t size) {
    Digest sha = Digest::sha256();
    sha.update(data, size);
    return sha.hex();
}

}  // namespace fstore
