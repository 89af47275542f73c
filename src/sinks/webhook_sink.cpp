/*
 * webhook_sink.cpp: see webhook_sink.h.
 *
 * Request: POST, Content-Type: application/json, body {"data":[entry,...]}
 * with the entries exactly as the file sink writes them. webhook-id is
 * derived from the batch's key (msg_ and 32 hex digits of its SHA-256): the
 * batch's place in the spool, so a batch sent again carries the same id;
 * Idempotency-Key repeats it.
 *
 * Answers: 2xx acknowledges; 400, 409, 413, 415 and 422 refuse entries: the
 * delivery machinery bisects the batch and parks the entries refused
 * (pgsink.on_rejection), and 413 asks for smaller batches;
 * anything else (no answer, 3xx, 401, 403, 404, 408, 429, 5xx) is retried
 * with back-off, honouring Retry-After.
 */
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <ctime>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <strings.h>
#include <zlib.h>

#include "core/digest.h"
#include "http/redact.h"
#include "sinks/webhook_sink.h"

namespace pgsink
{

bool webhook_secret_key(const std::string &secret, std::string *key)
{
    static const char kPrefix[] = "whsec_";
    if (secret.compare(0, sizeof(kPrefix) - 1, kPrefix) != 0)
        return false;
    std::string b64 = secret.substr(sizeof(kPrefix) - 1);
    if (b64.empty() || b64.size() % 4 != 0)
        return false;
    std::string out(b64.size() / 4 * 3, '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char *>(out.data()),
                            reinterpret_cast<const unsigned char *>(b64.data()),
                            static_cast<int>(b64.size()));
    if (n < 0)
        return false;
    size_t pad = 0;
    for (size_t i = b64.size(); i > 0 && b64[i - 1] == '='; i--)
        pad++;
    out.resize(static_cast<size_t>(n) - pad);
    if (out.empty())
        return false;
    *key = out;
    return true;
}

WebhookSigner::WebhookSigner(const std::string &key, const std::string &id,
                             const std::string &timestamp)
{
    EVP_MAC *mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : nullptr;
    mac_ = mac;
    ctx_ = ctx;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                           OSSL_PARAM_construct_end()};
    ok_ = ctx != nullptr && EVP_MAC_init(ctx, reinterpret_cast<const unsigned char *>(key.data()),
                                         key.size(), params) == 1;
    update(id.data(), id.size());
    update(".", 1);
    update(timestamp.data(), timestamp.size());
    update(".", 1);
}

WebhookSigner::~WebhookSigner()
{
    EVP_MAC_CTX_free(static_cast<EVP_MAC_CTX *>(ctx_));
    EVP_MAC_free(static_cast<EVP_MAC *>(mac_));
}

void WebhookSigner::update(const char *data, size_t len)
{
    ok_ = ok_ && EVP_MAC_update(static_cast<EVP_MAC_CTX *>(ctx_),
                                reinterpret_cast<const unsigned char *>(data), len) == 1;
}

std::string WebhookSigner::finish()
{
    unsigned char out[EVP_MAX_MD_SIZE];
    size_t len = 0;
    ok_ = ok_ && EVP_MAC_final(static_cast<EVP_MAC_CTX *>(ctx_), out, &len, sizeof(out)) == 1;
    if (!ok_)
        throw std::runtime_error("could not compute the webhook signature");
    return "v1," + base64(std::string_view(reinterpret_cast<const char *>(out), len));
}

bool parse_webhook_headers(const std::string &text, std::vector<std::string> *out, std::string *why)
{
    static const char *const kOwn[] = {
        "content-type", "content-length",    "content-encoding",  "host",   "idempotency-key",
        "webhook-id",   "webhook-timestamp", "webhook-signature", "expect", "transfer-encoding"};
    size_t at = 0;
    int n = 0;
    while (at <= text.size()) {
        size_t nl = text.find('\n', at);
        if (nl == std::string::npos)
            nl = text.size();
        std::string line = text.substr(at, nl - at);
        at = nl + 1;
        n++;
        while (!line.empty() && (line.back() == '\r' || line.back() == ' '))
            line.pop_back();
        if (line.empty())
            continue;
        size_t colon = line.find(':');
        std::string name = colon == std::string::npos ? "" : line.substr(0, colon);
        bool token = !name.empty();
        for (char c : name)
            token =
                token && (isalnum(static_cast<unsigned char>(c)) || strchr("!#$%&'*+-.^_`|~", c));
        if (!token) {
            *why =
                "line " + std::to_string(n) + " of pgsink.webhook_headers is not \"Name: value\"";
            return false;
        }
        for (const char *own : kOwn)
            if (strcasecmp(name.c_str(), own) == 0) {
                *why = "pgsink.webhook_headers may not set " + name + ": the sink sets it";
                return false;
            }
        out->push_back(line);
    }
    return true;
}

std::string gzip_compress(const std::string &data)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        throw SinkError("could not start gzip compression", false);
    std::string out(deflateBound(&z, data.size()), '\0');
    z.next_in = reinterpret_cast<Bytef *>(const_cast<char *>(data.data()));
    z.avail_in = static_cast<uInt>(data.size());
    z.next_out = reinterpret_cast<Bytef *>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    int rc = deflate(&z, Z_FINISH);
    out.resize(z.total_out);
    deflateEnd(&z);
    if (rc != Z_STREAM_END)
        throw SinkError("could not gzip a webhook body", false);
    return out;
}

WebhookSink::WebhookSink(Settings settings) : settings_(std::move(settings))
{
    if (!settings_.secret.empty() && !webhook_secret_key(settings_.secret, &key_))
        throw SinkError("pgsink.webhook_secret is not a whsec_<base64> secret", false);
    std::string why;
    if (!parse_webhook_headers(settings_.headers, &extra_headers_, &why))
        throw SinkError(why, false);
}

std::string WebhookSink::describe() const
{
    /* Slack-style URLs carry their credential in the path: never shown. */
    return "webhook " + url_for_messages(settings_.url);
}

std::string WebhookSink::state() const
{
    /* Which receiver it delivers to (a digest: the URL may hold a secret). */
    return "webhook " + sha256_hex(settings_.url, 16);
}

/*
 * The answer's body without our secrets: a receiver may echo what it was
 * sent (an Authorization header, the URL) into an error page, and the
 * excerpt goes to the log, pgsink.sinks and the dead letters.
 */
std::string WebhookSink::scrub(std::string body) const
{
    std::vector<std::string> secrets = {settings_.secret};
    for (const std::string &h : extra_headers_)
        add_header_secrets(h, secrets);
    /* The URL's parts that may hold a credential: user info, path and query. */
    add_url_secrets(settings_.url, true, secrets);
    return redact(std::move(body), secrets);
}

bool WebhookSink::open(const Resume &from)
{
    if (settings_.url.empty())
        throw SinkError("pgsink.webhook_url is not set", false);
    /* Another receiver than the cursor's: it has not been told the schemas. */
    return !from.state.empty() && from.state != state();
}

/*
 * Copy n bytes of entries, each newline made a comma. One pass at the speed
 * of a copy: a memchr() per ~300-byte entry after the copy took a tenth of
 * the worker's thread and of the signing threads (perf).
 */
static void copy_lines_as_list(char *out, const char *in, size_t n)
{
    size_t i = 0;
#ifdef __SSE2__
    const __m128i newline = _mm_set1_epi8('\n');
    const __m128i flip = _mm_set1_epi8('\n' ^ ','); /* a newline xor this is a comma */
    for (; i + 16 <= n; i += 16) {
        __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i *>(in + i));
        __m128i newlines = _mm_cmpeq_epi8(bytes, newline);
        bytes = _mm_xor_si128(bytes, _mm_and_si128(newlines, flip));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(out + i), bytes);
    }
#endif
    for (; i < n; i++)
        out[i] = in[i] == '\n' ? ',' : in[i];
}

/*
 * The body {"data":[entry,entry,...]} of newline-terminated entries, made
 * piece by piece from them wherever it is needed: signed through a small
 * buffer (in the cache), and copied into libcurl's upload buffer as it is
 * sent. A batch is never copied whole into a body of its own: that copy
 * (megabytes out of the cache, into fresh memory) cost as much as sending.
 */
class WebhookBody
{
  public:
    explicit WebhookBody(std::string_view lines)
        : lines_(lines), n_(lines.empty() ? 0 : lines.size() - 1) /* the last newline is not sent */
    {
    }
    size_t size() const { return kHeadLen + n_ + kTailLen; }
    /* Bytes of the body from at into out, at most max (fewer at its end); how many. */
    size_t copy(size_t at, char *out, size_t max) const
    {
        size_t done = 0;
        while (done < max && at < size()) {
            size_t k;
            if (at < kHeadLen) {
                k = std::min(kHeadLen - at, max - done);
                memcpy(out + done, kHead + at, k);
            } else if (at < kHeadLen + n_) {
                /* Entries: newlines become commas, a piece at a time while it is in the cache. */
                size_t from = at - kHeadLen;
                k = std::min({n_ - from, max - done, kPiece});
                copy_lines_as_list(out + done, lines_.data() + from, k);
            } else {
                size_t from = at - kHeadLen - n_;
                k = std::min(kTailLen - from, max - done);
                memcpy(out + done, kTail + from, k);
            }
            done += k;
            at += k;
        }
        return done;
    }

  private:
    static constexpr size_t kPiece = 64 * 1024;
    static constexpr const char *kHead = "{\"data\":[";
    static constexpr const char *kTail = "]}";
    static constexpr size_t kHeadLen = 9, kTailLen = 2;
    std::string_view lines_;
    size_t n_;
};

/* The signature of body (Standard Webhooks), fed through a buffer the size of a piece. */
static std::string sign_body(const WebhookBody &body, WebhookSigner &signer)
{
    static constexpr size_t kPiece = 64 * 1024;
    std::unique_ptr<char[]> piece(new char[kPiece]);
    for (size_t at = 0, k; at < body.size(); at += k) {
        k = body.copy(at, piece.get(), kPiece);
        signer.update(piece.get(), k);
    }
    return signer.finish();
}

HttpRequest WebhookSink::request(std::string_view lines, const std::string &key)
{
    HttpRequest r;
    r.url = settings_.url;
    /* From the batch's place in the spool: the same on every retry, also after a crash. */
    std::string id = "msg_" + sha256_hex(key, 16);
    std::string timestamp = std::to_string(static_cast<long>(time(nullptr)));
    r.headers = {
        "Content-Type: application/json",
        "webhook-id: " + id,
        "webhook-timestamp: " + timestamp,
        "Idempotency-Key: " + id,
    };
    WebhookBody body(lines);
    if (!key_.empty()) {
        WebhookSigner signer(key_, id, timestamp);
        r.headers.push_back("webhook-signature: " + sign_body(body, signer));
    }
    r.headers.insert(r.headers.end(), extra_headers_.begin(), extra_headers_.end());
    if (settings_.gzip) {
        /* The signature covers the JSON; gzip is the transport's. */
        r.headers.push_back("Content-Encoding: gzip");
        std::string json(body.size(), '\0');
        body.copy(0, json.data(), json.size());
        r.body = gzip_compress(json);
        return r;
    }
    /*
     * Made while it is sent, from the batch's lines (which outlive the
     * request: the exchange's lines), with its size known up front (a
     * Content-Length, as before); sent again from its start if libcurl
     * must (a kept-alive connection found closed).
     */
    struct Stream {
        WebhookBody body;
        size_t at;
    };
    auto stream = std::make_shared<Stream>(Stream{body, 0});
    r.body_size = static_cast<int64_t>(body.size());
    r.body_source = [stream](char *buf, size_t max) {
        size_t k = stream->body.copy(stream->at, buf, max);
        stream->at += k;
        return k;
    };
    r.body_rewind = [stream] {
        stream->at = 0;
        return true;
    };
    return r;
}

Answer WebhookSink::answer(const HttpResponse &r, std::string_view)
{
    Answer a;
    a.status = static_cast<int>(r.status);
    if (r.status >= 200 && r.status < 300)
        return a;
    a.response = answer_excerpt(scrub(r.body), 200);
    if (r.status == 0) {
        a.kind = Answer::Kind::retry;
        a.message = describe() + ": " + r.transport_error;
        return a;
    }
    a.message = describe() + " answered HTTP " + std::to_string(r.status) +
                (a.response.empty() ? "" : ": " + a.response);
    /*
     * What refuses entries: 400, 409, 413 (too large: split), 415, 422.
     * Anything else (a redirect, 401 or 403 after a credential changed,
     * 404 during a deploy, 408, 429, 5xx) says the receiver cannot take
     * anything now: retried with back-off, never parked.
     */
    long st = r.status;
    if (st == 400 || st == 409 || st == 413 || st == 415 || st == 422) {
        a.kind = Answer::Kind::reject;
        a.too_large = st == 413;
        return a;
    }
    a.kind = Answer::Kind::retry;
    a.retry_after_ms = retry_after_ms(r.retry_after, static_cast<long>(time(nullptr)));
    return a;
}

/* ---------------------------------------------------------------- selftest */

std::string webhook_selftest()
{
    std::string failures;
    auto expect = [&](bool ok, const std::string &what) {
        if (!ok)
            failures += (failures.empty() ? "" : "; ") + what;
    };
    /* Entries of every length: short ones, one across 64 kB pieces, one longer than a piece. */
    std::vector<std::string> batches = {"", "{\"a\":1}\n"};
    std::string lines;
    for (int i = 0; i < 3000; i++)
        lines += "{\"lsn\":\"0/" + std::to_string(i) + "\",\"v\":\"" +
                 std::string(static_cast<size_t>(i % 97), 'x') + ",\\n\"}\n";
    lines += "{\"long\":\"" + std::string(200000, 'y') + "\"}\n";
    lines += "{\"last\":true}\n";
    batches.push_back(lines);
    std::string key;
    webhook_secret_key("whsec_c2VsZnRlc3Qtc2VjcmV0LWtleS0wMTIzNDU2Nzg5", &key);
    for (const std::string &batch : batches) {
        std::string expected = "{\"data\":[";
        for (size_t at = 0; at < batch.size();) {
            size_t nl = batch.find('\n', at);
            expected += (at > 0 ? "," : "") + batch.substr(at, nl - at);
            at = nl + 1;
        }
        expected += "]}";
        for (bool sign : {false, true}) {
            WebhookSink::Settings settings;
            settings.url = "http://127.0.0.1:1/";
            if (sign)
                settings.secret = "whsec_c2VsZnRlc3Qtc2VjcmV0LWtleS0wMTIzNDU2Nzg5";
            WebhookSink sink(settings);
            HttpRequest r = sink.request(batch, "batch-key");
            std::string what =
                std::to_string(batch.size()) + "-byte batch" + (sign ? ", signed" : "") + ": ";
            expect(r.body.empty() && r.body_source && r.body_rewind,
                   what + "the body is not made while it is sent");
            if (!r.body_source || !r.body_rewind)
                continue;
            expect(r.body_size == static_cast<int64_t>(expected.size()),
                   what + "its size is not the body's");
            /* Read as libcurl may: in pieces of any size, then again from the start. */
            for (size_t piece : {size_t{1}, size_t{7}, size_t{65535}, size_t{65536}, size_t{65537},
                                 size_t{2} << 20}) {
                expect(r.body_rewind(), what + "it cannot be sent again");
                std::string got, buf(piece, '\0');
                while (size_t k = r.body_source(buf.data(), buf.size()))
                    got.append(buf.data(), k);
                expect(got == expected, what + "read in pieces of " + std::to_string(piece) +
                                            " bytes, it differs from {\"data\":[...]}");
            }
            std::string id, timestamp, signature;
            for (const std::string &h : r.headers) {
                if (h.rfind("webhook-id: ", 0) == 0)
                    id = h.substr(12);
                if (h.rfind("webhook-timestamp: ", 0) == 0)
                    timestamp = h.substr(19);
                if (h.rfind("webhook-signature: ", 0) == 0)
                    signature = h.substr(19);
            }
            if (!sign) {
                expect(signature.empty(), what + "signed without a secret");
                continue;
            }
            WebhookSigner whole(key, id, timestamp);
            whole.update(expected.data(), expected.size());
            expect(!signature.empty() && signature == whole.finish(),
                   what + "the signature is not the one of the body sent");
        }
    }
    /* A transfer's error text is cut of the request's credentials (http_pipeline.cpp). */
    HttpRequest r;
    r.url = "https://hookuser:pa55-w0rd@hooks.example/services/T0KEN-123?sig=q5ecret";
    r.headers = {"Authorization: Bearer s3cr3t-t0ken", "X-Api-Key:k3y-v4lue",
                 "X-Tabbed:\tt4b-v4lue\t", "X-Both: c0mb0-pa55-w0rd-t41l"};
    std::string said = redact("user hookuser:pa55-w0rd, pa55-w0rd, path /services/T0KEN-123, "
                              "sig=q5ecret, Bearer s3cr3t-t0ken, k3y-v4lue, t4b-v4lue, "
                              "token s3cr3t-t0ken is invalid, c0mb0-pa55-w0rd-t41l",
                              request_secrets(r));
    for (const char *secret : {"pa55-w0rd", "T0KEN-123", "q5ecret", "s3cr3t-t0ken", "k3y-v4lue",
                               "t4b-v4lue", "c0mb0", "t41l"})
        expect(said.find(secret) == std::string::npos,
               std::string("a transport error keeps a credential of the request: ") + said);
    return failures;
}

} // namespace pgsink
