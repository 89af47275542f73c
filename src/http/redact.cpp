/* redact.cpp: see redact.h. */
#include "http/redact.h"

namespace pgsink
{

void add_url_secrets(const std::string &url, bool path_too, std::vector<std::string> &secrets)
{
    secrets.push_back(url);
    size_t scheme = url.find("://");
    if (scheme == std::string::npos)
        return;
    size_t path = url.find_first_of("/?#", scheme + 3);
    size_t at = url.rfind('@', path);
    if (at != std::string::npos && at > scheme)
        secrets.push_back(url.substr(scheme + 3, at - scheme - 3));
    if (path_too && path != std::string::npos && url.size() - path > 1)
        secrets.push_back(url.substr(path));
}

std::string redact(std::string text, const std::vector<std::string> &secrets)
{
    static const std::string kRedacted = "[redacted]";
    for (const std::string &secret : secrets) {
        if (secret.size() < 4)
            continue;
        for (size_t at = text.find(secret); at != std::string::npos;
             at = text.find(secret, at + kRedacted.size()))
            text.replace(at, secret.size(), kRedacted);
    }
    return text;
}

} // namespace pgsink
