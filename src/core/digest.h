/*
 * digest.h: SHA-256 in hex (OpenSSL), for keys that must not hold what
 * they stand for (a setting with a secret, a parked entry, a receiver).
 * Pure C++.
 */
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace pgsink
{

/* The first bytes (at most 32) of data's SHA-256, as lower-case hex. */
std::string sha256_hex(std::string_view data, size_t bytes = 32);

} // namespace pgsink
