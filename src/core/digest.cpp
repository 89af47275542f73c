/*
 * digest.cpp: see digest.h.
 */
#include <algorithm>
#include <openssl/sha.h>

#include "core/digest.h"

namespace pgsink
{

std::string sha256_hex(std::string_view data, size_t bytes)
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char *>(data.data()), data.size(), d);
    static const char kHex[] = "0123456789abcdef";
    std::string out;
    for (size_t i = 0; i < std::min<size_t>(bytes, SHA256_DIGEST_LENGTH); i++) {
        out.push_back(kHex[d[i] >> 4]);
        out.push_back(kHex[d[i] & 15]);
    }
    return out;
}

} // namespace pgsink
