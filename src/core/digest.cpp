/*
 * digest.cpp: see digest.h.
 */
#include <algorithm>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdexcept>

#include "core/digest.h"

namespace pgsink
{

static std::string hex_of(const unsigned char *d, size_t bytes)
{
    static const char kHex[] = "0123456789abcdef";
    std::string out;
    for (size_t i = 0; i < std::min<size_t>(bytes, SHA256_DIGEST_LENGTH); i++) {
        out.push_back(kHex[d[i] >> 4]);
        out.push_back(kHex[d[i] & 15]);
    }
    return out;
}

std::string sha256_hex(std::string_view data, size_t bytes)
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char *>(data.data()), data.size(), d);
    return hex_of(d, bytes);
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new())
{
    if (ctx_ == nullptr ||
        EVP_DigestInit_ex(static_cast<EVP_MD_CTX *>(ctx_), EVP_sha256(), nullptr) != 1) {
        EVP_MD_CTX_free(static_cast<EVP_MD_CTX *>(ctx_));
        throw std::runtime_error("SHA-256: OpenSSL could not start a digest");
    }
}

Sha256::~Sha256()
{
    EVP_MD_CTX_free(static_cast<EVP_MD_CTX *>(ctx_));
}

void Sha256::add(std::string_view data)
{
    if (EVP_DigestUpdate(static_cast<EVP_MD_CTX *>(ctx_), data.data(), data.size()) != 1)
        throw std::runtime_error("SHA-256: OpenSSL could not digest");
}

std::string Sha256::hex(size_t bytes)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(static_cast<EVP_MD_CTX *>(ctx_), d, &n) != 1)
        throw std::runtime_error("SHA-256: OpenSSL could not end a digest");
    return hex_of(d, std::min<size_t>(bytes, n));
}

std::string base64(std::string_view data)
{
    std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char *>(out.data()),
                            reinterpret_cast<const unsigned char *>(data.data()),
                            static_cast<int>(data.size()));
    out.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return out;
}

} // namespace pgsink
