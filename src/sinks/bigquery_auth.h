/*
 * bigquery_auth.h: the OAuth 2.0 service-account flow of the BigQuery sink
 * (RFC 7523 JWT bearer grant, as Google's client libraries do it).
 *
 * The key file (pgsink.bigquery_credentials: a service account's JSON key)
 * gives client_email, private_key (PEM), private_key_id and token_uri. A
 * JWT {iss: client_email, scope, aud: token_uri, iat, exp = iat + 3600},
 * signed RS256 with the private key (OpenSSL EVP), is exchanged at
 * token_uri for an access token, kept until shortly before it expires.
 *
 * Nothing here ever puts the private key, the JWT or a token into a
 * message: errors name the file and what is wrong with it, and the token
 * endpoint by url_for_messages().
 *
 * Pure C++: no PostgreSQL headers.
 */
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "http/http_pipeline.h"

namespace pgsink
{

class BigQueryAuth
{
  public:
    BigQueryAuth() = default;
    ~BigQueryAuth();
    BigQueryAuth(const BigQueryAuth &) = delete;
    BigQueryAuth &operator=(const BigQueryAuth &) = delete;

    /* Read the key file; throws std::runtime_error saying what is wrong (never its content). */
    void load(const std::string &path);
    bool loaded() const { return key_ != nullptr; }
    const std::string &token_uri() const { return token_uri_; }
    const std::string &client_email() const { return client_email_; }
    const std::string &project_id() const { return project_id_; }

    /* A token is held and does not expire within the refresh margin. */
    bool valid(int64_t now_unix) const;
    /* The "Authorization: Bearer ..." header. */
    std::string header() const { return "Authorization: Bearer " + token_; }
    /* Which token header() gives: a 401 only drops the token it was sent with. */
    uint64_t generation() const { return generation_; }
    /* Drop the token (a 401 answered it): the next request gets a new one. */
    void invalidate(uint64_t generation);

    /* The token request: a freshly signed JWT posted to token_uri. */
    HttpRequest token_request(int64_t now_unix) const;
    /*
     * The token endpoint's answer: "" when a token was taken, else what went
     * wrong (the endpoint's error and description, never the assertion).
     */
    std::string take_token(const HttpResponse &r, int64_t now_unix);

    /* The signed JWT (for the selftest). */
    std::string assertion(int64_t now_unix) const;

  private:
    void *key_ = nullptr; /* EVP_PKEY */
    std::string client_email_, key_id_, token_uri_, project_id_;
    std::string token_;
    int64_t expires_unix_ = 0, refresh_unix_ = 0;
    uint64_t generation_ = 0;
};

/*
 * An excerpt of an answer (answer_excerpt()) with every run of 48 or more
 * token characters (base64url, '.', '/', '+', '=') cut out: a token
 * endpoint or a proxy that echoes an assertion or a token must not put it
 * into a message or a dead letter.
 */
std::string credential_free_excerpt(const std::string &text, size_t max);

/* base64url without padding (JWT segments). */
std::string base64url(const std::string &data);

} // namespace pgsink
