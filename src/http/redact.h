/*
 * redact.h: our secrets taken out of a remote service's answer before it
 * reaches the log, pgsink.sinks or the dead letters. A receiver or a proxy
 * may echo what it was sent (an Authorization header, a URL with a token)
 * into an error page.
 *
 * Pure C++: no PostgreSQL headers.
 */
#pragma once

#include <string>
#include <vector>

namespace pgsink
{

/*
 * The parts of url that may hold a credential, added to secrets: the whole
 * URL; its user info (user:password@), its password alone, both also
 * %-decoded, and the base64 libcurl sends of them ("Authorization: Basic");
 * with path_too its path with and without its query (a webhook's token),
 * and the value alone of a credential parameter (ClickHouse's ?password=,
 * a signed URL's sig=).
 */
void add_url_secrets(const std::string &url, bool path_too, std::vector<std::string> &secrets);

/*
 * The value of an HTTP header line ("Name: value"), added to secrets: with
 * its spaces and tabs around it taken off (a receiver echoes it without
 * them), and the credential alone after an authentication scheme
 * ("Bearer T0KEN": "T0KEN", which a receiver may echo as "token T0KEN is
 * invalid"). A line without a colon or value adds nothing.
 */
void add_header_secrets(const std::string &header, std::vector<std::string> &secrets);

/*
 * text with every occurrence of each secret replaced by "[redacted]";
 * secrets shorter than 4 characters are left alone (they cannot be told
 * from ordinary text). The longest are replaced first: a shorter one
 * replaced inside a longer one would leave the longer one's rest.
 */
std::string redact(std::string text, const std::vector<std::string> &secrets);

} // namespace pgsink
