/*
 * webhook_sink.h: batches of entries POSTed to an HTTP endpoint, signed as
 * the Standard Webhooks specification says (webhook-id, webhook-timestamp,
 * webhook-signature: v1,<base64 HMAC-SHA256>). Any 2xx acknowledges the
 * batch. At least once: a batch is sent again until acknowledged, with the
 * same webhook-id; entries carry (lsn, sequence) for the receiver to drop
 * what it already has.
 */
#pragma once

#include <string>
#include <vector>

#include "sinks/sink.h"

namespace pgsink
{

class WebhookSink final : public HttpSink
{
  public:
    struct Settings {
        std::string url;
        std::string secret;  /* "whsec_<base64>", or empty: unsigned */
        std::string headers; /* extra headers, "Name: value" a line (a secret too) */
        bool gzip = false;   /* compress bodies (Content-Encoding: gzip) */
        HttpOptions http;
    };
    explicit WebhookSink(Settings settings);
    bool open(const Resume &from) override;
    HttpRequest request(std::string_view lines, const std::string &key) override;
    Answer answer(const HttpResponse &response, std::string_view lines) override;
    HttpOptions http_options() const override { return settings_.http; }
    /* request() reads the batch and the settings only: it may be made ahead. */
    bool prepares_ahead() const override { return true; }
    /* A webhook-timestamp older than this is stale for a receiver's tolerance (5 minutes). */
    int64_t made_ahead_max_age_ms() const override { return 10000; }
    /* Two signed at once (request() only reads): signing costs as much as sending. */
    int made_ahead_at_once() const override { return 2; }
    bool sends_before_cursor_save() const override { return true; }
    void close() override {}
    std::string describe() const override;
    /* Which receiver (a digest of the URL): another one gets the schemas again. */
    std::string state() const override;

  private:
    std::string scrub(std::string body) const;
    Settings settings_;
    std::string key_; /* the decoded secret */
    std::vector<std::string> extra_headers_;
};

/*
 * Standard Webhooks' signature, "v1,<base64 of HMAC-SHA256(key,
 * id.timestamp.body)>", with the body fed in pieces as it is made (each
 * piece signed while it is still in the cache).
 */
class WebhookSigner
{
  public:
    WebhookSigner(const std::string &key, const std::string &id, const std::string &timestamp);
    ~WebhookSigner();
    WebhookSigner(const WebhookSigner &) = delete;
    WebhookSigner &operator=(const WebhookSigner &) = delete;
    void update(const char *data, size_t len);
    std::string finish();

  private:
    void *mac_ = nullptr, *ctx_ = nullptr; /* EVP_MAC, EVP_MAC_CTX */
    bool ok_ = false;
};
/*
 * The extra headers of pgsink.webhook_headers ("Name: value" a line) into
 * out; false, with *why (which never quotes a value), if one is malformed
 * or is a header the sink sets itself.
 */
bool parse_webhook_headers(const std::string &text, std::vector<std::string> *out,
                           std::string *why);
/* gzip (RFC 1952) of data. */
std::string gzip_compress(const std::string &data);
/* The key of a "whsec_<base64>" secret; false if it is not one. */
bool webhook_secret_key(const std::string &secret, std::string *key);
/*
 * The request's body as libcurl reads it (in pieces of every size, and
 * again after a rewind) against {"data":[...]} made at once, and its
 * signature against one over that whole body; "" if all is well, else what
 * went wrong.
 */
std::string webhook_selftest();

} // namespace pgsink
