/*
 * digest.h: SHA-256 in hex (OpenSSL), for keys that must not hold what
 * they stand for (a setting with a secret, a parked entry, a receiver);
 * and base64 (signatures, Basic auth). Pure C++.
 */
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace pgsink
{

/* The first bytes (at most 32) of data's SHA-256, as lower-case hex. */
std::string sha256_hex(std::string_view data, size_t bytes = 32);

/* SHA-256 of data given piece by piece (as sha256_hex of the pieces joined). */
class Sha256
{
  public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256 &) = delete;
    Sha256 &operator=(const Sha256 &) = delete;
    void add(std::string_view data);
    /* The first bytes (at most 32) of the digest, as lower-case hex; ends it. */
    std::string hex(size_t bytes = 32);

  private:
    void *ctx_; /* EVP_MD_CTX */
};

/* data in base64 (RFC 4648, with padding). */
std::string base64(std::string_view data);

} // namespace pgsink
