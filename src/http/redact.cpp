/* redact.cpp: see redact.h. */
#include <algorithm>
#include <cctype>

#include "core/digest.h"
#include "http/redact.h"

namespace pgsink
{

/* text with its %XX escapes decoded, as libcurl decodes a URL's user and password. */
static std::string percent_decoded(const std::string &text)
{
    auto hex = [](char c) {
        return c >= '0' && c <= '9'   ? c - '0'
               : c >= 'a' && c <= 'f' ? c - 'a' + 10
               : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                      : -1;
    };
    std::string out;
    for (size_t i = 0; i < text.size(); i++) {
        int hi, lo;
        if (text[i] == '%' && i + 2 < text.size() && (hi = hex(text[i + 1])) >= 0 &&
            (lo = hex(text[i + 2])) >= 0) {
            out.push_back(static_cast<char>(hi * 16 + lo));
            i += 2;
        } else {
            out.push_back(text[i]);
        }
    }
    return out;
}

/* A secret as written and as it may be echoed decoded. */
static void add_both(const std::string &secret, std::vector<std::string> &secrets)
{
    secrets.push_back(secret);
    std::string decoded = percent_decoded(secret);
    if (decoded != secret)
        secrets.push_back(decoded);
}

/* Query parameters whose value is a credential (ClickHouse's ?password=, a token). */
static bool credential_parameter(const std::string &name)
{
    for (const char *n : {"password", "key", "token", "secret", "api_key", "apikey", "access_token",
                          "auth", "sig", "signature"})
        if (name == n)
            return true;
    return false;
}

void add_url_secrets(const std::string &url, bool path_too, std::vector<std::string> &secrets)
{
    secrets.push_back(url);
    size_t scheme = url.find("://");
    if (scheme == std::string::npos)
        return;
    size_t path = url.find_first_of("/?#", scheme + 3);
    size_t at = url.rfind('@', path);
    if (at != std::string::npos && at > scheme) {
        std::string userinfo = url.substr(scheme + 3, at - scheme - 3);
        add_both(userinfo, secrets);
        size_t colon = userinfo.find(':');
        if (colon != std::string::npos)
            add_both(userinfo.substr(colon + 1), secrets); /* the password alone */
        /*
         * libcurl sends a URL's user info as "Authorization: Basic
         * base64(user:password)", decoded: a proxy may echo that header.
         */
        std::string plain =
            percent_decoded(userinfo.substr(0, colon)) +
            (colon == std::string::npos ? std::string(":")
                                        : ":" + percent_decoded(userinfo.substr(colon + 1)));
        secrets.push_back(base64(plain));
    }
    if (path_too && path != std::string::npos && url.size() - path > 1) {
        secrets.push_back(url.substr(path));
        /* The path alone too (a token in it is echoed without the query, "404 /hooks/T0K"). */
        size_t path_end = url.find_first_of("?#", path);
        if (path_end != std::string::npos && path_end > path + 1)
            secrets.push_back(url.substr(path, path_end - path));
        /* A credential parameter's value alone: echoed without the rest of the query. */
        size_t q = url.find('?', path);
        while (q != std::string::npos && q + 1 < url.size()) {
            size_t start = q + 1;
            size_t amp = url.find_first_of("&#", start);
            std::string param =
                url.substr(start, amp == std::string::npos ? std::string::npos : amp - start);
            size_t eq = param.find('=');
            if (eq != std::string::npos && credential_parameter(param.substr(0, eq)))
                add_both(param.substr(eq + 1), secrets);
            q = amp != std::string::npos && url[amp] == '&' ? amp : std::string::npos;
        }
    }
}

void add_header_secrets(const std::string &header, std::vector<std::string> &secrets)
{
    size_t colon = header.find(':');
    if (colon == std::string::npos)
        return;
    size_t from = header.find_first_not_of(" \t", colon + 1);
    if (from == std::string::npos)
        return;
    size_t to = header.find_last_not_of(" \t\r\n") + 1;
    std::string value = header.substr(from, to - from);
    secrets.push_back(value);
    /*
     * "Bearer T0KEN", "Basic dXNlcjpwYXNz", "ApiKey ...": a scheme (letters)
     * and one word after it, the credential alone too ("text/plain;
     * charset=utf-8" is no scheme).
     */
    size_t space = value.find_first_of(" \t");
    if (space == std::string::npos || space == 0)
        return;
    for (size_t i = 0; i < space; i++)
        if (!isalpha(static_cast<unsigned char>(value[i])))
            return;
    size_t credential = value.find_first_not_of(" \t", space);
    if (value.find_first_of(" \t", credential) == std::string::npos)
        secrets.push_back(value.substr(credential));
}

std::string redact(std::string text, const std::vector<std::string> &secrets)
{
    static const std::string kRedacted = "[redacted]";
    std::vector<const std::string *> longest_first;
    longest_first.reserve(secrets.size());
    for (const std::string &secret : secrets)
        if (secret.size() >= 4)
            longest_first.push_back(&secret);
    std::stable_sort(
        longest_first.begin(), longest_first.end(),
        [](const std::string *a, const std::string *b) { return a->size() > b->size(); });
    for (const std::string *each : longest_first) {
        const std::string &secret = *each;
        for (size_t at = text.find(secret); at != std::string::npos;
             at = text.find(secret, at + kRedacted.size()))
            text.replace(at, secret.size(), kRedacted);
    }
    return text;
}

} // namespace pgsink
