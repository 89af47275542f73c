/*
 * http_pipeline.cpp: see http_pipeline.h. libcurl's socket interface
 * (curl_multi_socket_action): curl tells which sockets it waits on and when
 * its next timeout falls, through the two callbacks below.
 */
#include <algorithm>
#include <cctype>
#include <cstring>
#include <ctime>
#include <curl/curl.h>
#include <stdexcept>
#include <strings.h>

#include "http/http_pipeline.h"
#include "http/redact.h"

namespace pgsink
{

std::vector<std::string> request_secrets(const HttpRequest &r)
{
    std::vector<std::string> secrets;
    add_url_secrets(r.url, true, secrets);
    for (const std::string &h : r.headers)
        add_header_secrets(h, secrets);
    return secrets;
}

/* Idle handles kept for reuse. */
static constexpr size_t kIdleHandles = 16;
/*
 * Bodies from this size are sent through an upload buffer of kBigUploadBuffer
 * bytes, libcurl's most (2 MB): each turn of the caller's wait sends one
 * buffer. 256 kB (in the cache) cost the webhook's worker more, not less.
 */
static constexpr size_t kBigBody = 1024 * 1024;
static constexpr long kBigUploadBuffer = 2048 * 1024;

int64_t monotonic_ms()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

/* Where an answer's body goes, and how much of it is kept. */
struct BodySink {
    std::string *body;
    size_t keep;
};

/* What libcurl's read and seek callbacks get: the request whose body_source they call. */
struct BodySource {
    HttpRequest *request;
    std::string *error; /* why it failed */
};

struct HttpPipeline::Transfer {
    BodySink body_sink;
    uint64_t tag = 0;
    CURL *easy = nullptr;
    struct curl_slist *headers = nullptr;
    HttpRequest request; /* curl reads the body in place: kept until the end */
    HttpResponse response;
    char error[CURL_ERROR_SIZE] = "";
    std::string source_error; /* why request.body_source failed */
    BodySource body_source{nullptr, nullptr};
};

/* libcurl calls these from C: no exception may leave them (returning 0 aborts the transfer). */
static size_t on_read(char *buf, size_t size, size_t n, void *user) noexcept
{
    BodySource *source = static_cast<BodySource *>(user);
    try {
        return source->request->body_source(buf, size * n);
    } catch (const std::exception &e) {
        *source->error = e.what();
    } catch (...) {
        *source->error = "the request's body could not be made";
    }
    return CURL_READFUNC_ABORT;
}

static int on_seek(void *user, curl_off_t offset, int origin) noexcept
{
    BodySource *source = static_cast<BodySource *>(user);
    try {
        if (offset == 0 && origin == SEEK_SET && source->request->body_rewind &&
            source->request->body_rewind())
            return CURL_SEEKFUNC_OK;
    } catch (...) {
    }
    return CURL_SEEKFUNC_CANTSEEK;
}

static size_t on_body(char *data, size_t size, size_t n, void *user) noexcept
{
    BodySink *sink = static_cast<BodySink *>(user);
    std::string *body = sink->body;
    size_t len = size * n;
    try {
        if (body->size() < sink->keep)
            body->append(data, std::min(len, sink->keep - body->size()));
    } catch (...) {
        return 0;
    }
    return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *user) noexcept
{
    std::string *retry_after = static_cast<std::string *>(user);
    size_t len = size * n;
    static const char kName[] = "retry-after:";
    try {
        if (len > sizeof(kName) - 1 && strncasecmp(data, kName, sizeof(kName) - 1) == 0) {
            std::string v(data + sizeof(kName) - 1, len - (sizeof(kName) - 1));
            size_t a = v.find_first_not_of(" \t"), b = v.find_last_not_of(" \t\r\n");
            *retry_after = a == std::string::npos ? "" : v.substr(a, b - a + 1);
        }
    } catch (...) {
        return 0;
    }
    return len;
}

struct PipelineCallbacks {
    static int socket_changed(CURL *, curl_socket_t fd, int what, void *self, void *) noexcept;
    static int timer_changed(CURLM *, long timeout_ms, void *self) noexcept;
};

/* Sockets that joined or left any pipeline's waits() (see waits_generation()). */
static uint64_t waits_changes = 0;

/* curl waits on fd for what (or no longer: CURL_POLL_REMOVE). */
int PipelineCallbacks::socket_changed(CURL *, curl_socket_t fd, int what, void *self,
                                      void *) noexcept
{
    auto *p = static_cast<HttpPipeline *>(self);
    auto it = std::find_if(p->waits_.begin(), p->waits_.end(),
                           [fd](const HttpPipeline::Wait &w) { return w.fd == fd; });
    if (what == CURL_POLL_REMOVE) {
        if (it != p->waits_.end()) {
            p->waits_.erase(it);
            p->waits_generation_ = ++waits_changes;
        }
        return 0;
    }
    HttpPipeline::Wait w{fd, what == CURL_POLL_IN || what == CURL_POLL_INOUT,
                         what == CURL_POLL_OUT || what == CURL_POLL_INOUT};
    try {
        if (it == p->waits_.end()) {
            p->waits_.push_back(w);
            p->waits_generation_ = ++waits_changes;
        } else {
            *it = w;
        }
    } catch (...) {
        return -1;
    }
    return 0;
}

/* curl's next timeout: in timeout_ms (-1: none). */
int PipelineCallbacks::timer_changed(CURLM *, long timeout_ms, void *self) noexcept
{
    auto *p = static_cast<HttpPipeline *>(self);
    p->deadline_ms_ = timeout_ms < 0 ? -1 : monotonic_ms() + timeout_ms;
    return 0;
}

HttpPipeline::HttpPipeline(HttpOptions options) : options_(std::move(options))
{
    static bool initialized = false;
    if (!initialized) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            throw std::runtime_error("could not initialize libcurl");
        initialized = true;
    }
    multi_ = curl_multi_init();
    if (multi_ == nullptr)
        throw std::runtime_error("could not initialize a libcurl handle");
    CURLM *m = static_cast<CURLM *>(multi_);
    curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, &PipelineCallbacks::socket_changed);
    curl_multi_setopt(m, CURLMOPT_SOCKETDATA, this);
    curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, &PipelineCallbacks::timer_changed);
    curl_multi_setopt(m, CURLMOPT_TIMERDATA, this);
}

HttpPipeline::~HttpPipeline()
{
    cancel_all();
    for (void *e : idle_easy_)
        curl_easy_cleanup(static_cast<CURL *>(e));
    curl_multi_cleanup(static_cast<CURLM *>(multi_));
}

size_t HttpPipeline::in_flight() const
{
    return active_.size() + delayed_.size();
}

void HttpPipeline::submit(uint64_t tag, HttpRequest request)
{
    if (request.delay_ms > 0) {
        int64_t due = monotonic_ms() + request.delay_ms;
        request.delay_ms = 0;
        delayed_.push_back(Delayed{due, tag, std::move(request)});
        return;
    }
    auto t = std::make_unique<Transfer>();
    t->tag = tag;
    t->request = std::move(request);
    if (!idle_easy_.empty()) {
        t->easy = static_cast<CURL *>(idle_easy_.back());
        idle_easy_.pop_back();
    } else {
        t->easy = curl_easy_init();
        if (t->easy == nullptr)
            throw std::runtime_error("could not initialize a libcurl handle");
    }
    for (const std::string &h : t->request.headers) {
        struct curl_slist *l = curl_slist_append(t->headers, h.c_str());
        if (l == nullptr) {
            curl_slist_free_all(t->headers);
            curl_easy_cleanup(t->easy);
            throw std::bad_alloc();
        }
        t->headers = l;
    }
    t->headers = curl_slist_append(t->headers, "Expect:"); /* no 100-continue round trip */
    if (t->request.body_source && t->request.body_size < 0)
        t->headers = curl_slist_append(t->headers, "Transfer-Encoding: chunked");

    CURL *easy = t->easy;
    curl_easy_setopt(easy, CURLOPT_URL, t->request.url.c_str());
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    /* A reused handle keeps its last method: every one is set anew. */
    curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, nullptr);
    if (t->request.method == "GET") {
        curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(easy, CURLOPT_POST, 1L);
        if (t->request.body_source) {
            t->body_source = {&t->request, &t->source_error};
            curl_easy_setopt(easy, CURLOPT_READFUNCTION, on_read);
            curl_easy_setopt(easy, CURLOPT_READDATA, &t->body_source);
            curl_easy_setopt(easy, CURLOPT_SEEKFUNCTION, on_seek);
            curl_easy_setopt(easy, CURLOPT_SEEKDATA, &t->body_source);
            if (t->request.body_size >= 0) {
                /* A known size: a Content-Length instead of chunks. */
                curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                                 static_cast<curl_off_t>(t->request.body_size));
                if (static_cast<size_t>(t->request.body_size) >= kBigBody)
                    curl_easy_setopt(easy, CURLOPT_UPLOAD_BUFFERSIZE, kBigUploadBuffer);
            }
        } else {
            curl_easy_setopt(easy, CURLOPT_POSTFIELDS, t->request.body.data());
            curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                             static_cast<curl_off_t>(t->request.body.size()));
            /*
             * libcurl copies a body through its upload buffer, 64 kB by
             * default: a batch of megabytes then takes hundreds of turns of
             * the worker's wait. A big body gets a big buffer (one per
             * handle, so bounded by the requests in flight; curl_easy_reset()
             * gives a reused handle the default back).
             */
            if (t->request.body.size() >= kBigBody)
                curl_easy_setopt(easy, CURLOPT_UPLOAD_BUFFERSIZE, kBigUploadBuffer);
        }
        /* PUT, PATCH, DELETE: the body sent as a POST's would be. */
        if (!t->request.method.empty() && t->request.method != "POST")
            curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, t->request.method.c_str());
    }
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, options_.timeout_ms);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, options_.connect_timeout_ms);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!options_.ca_file.empty()) {
        /* That CA only: not also the system's directory of CAs. */
        curl_easy_setopt(easy, CURLOPT_CAINFO, options_.ca_file.c_str());
        curl_easy_setopt(easy, CURLOPT_CAPATH, nullptr);
    }
    /* No proxy from the server's environment (http_proxy): headers carry credentials. */
    curl_easy_setopt(easy, CURLOPT_PROXY, "");
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    t->body_sink = BodySink{&t->response.body, t->request.keep_answer};
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &t->body_sink);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, &t->response.retry_after);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t->error);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, t.get());

    active_.push_back(std::move(t));
    if (curl_multi_add_handle(static_cast<CURLM *>(multi_), easy) != CURLM_OK) {
        Transfer *failed = active_.back().get();
        curl_slist_free_all(failed->headers);
        curl_easy_cleanup(failed->easy);
        active_.pop_back();
        throw std::runtime_error("could not start an HTTP request");
    }
}

long HttpPipeline::timeout_ms() const
{
    int64_t deadline = deadline_ms_;
    for (const Delayed &d : delayed_)
        if (deadline < 0 || d.due_ms < deadline)
            deadline = d.due_ms;
    if (deadline < 0)
        return -1;
    return static_cast<long>(std::max<int64_t>(0, deadline - monotonic_ms()));
}

void HttpPipeline::on_socket(int fd, bool readable, bool writable)
{
    int running = 0;
    int ev = (readable ? CURL_CSELECT_IN : 0) | (writable ? CURL_CSELECT_OUT : 0);
    curl_multi_socket_action(static_cast<CURLM *>(multi_), fd, ev, &running);
    collect();
}

void HttpPipeline::on_timer()
{
    for (size_t i = 0; i < delayed_.size();) {
        if (delayed_[i].due_ms > monotonic_ms()) {
            i++;
            continue;
        }
        Delayed d = std::move(delayed_[i]);
        delayed_.erase(delayed_.begin() + static_cast<long>(i));
        /*
         * Called while the worker waits, outside any exchange: a request
         * that cannot start fails as a transfer would (retried), instead of
         * failing the worker.
         */
        std::vector<std::string> secrets = request_secrets(d.request);
        try {
            submit(d.tag, std::move(d.request));
        } catch (const std::exception &e) {
            HttpResponse failed;
            failed.transport_error =
                redact(std::string("could not start the request: ") + e.what(), secrets);
            done_.emplace_back(d.tag, std::move(failed));
        }
    }
    if (deadline_ms_ < 0 || monotonic_ms() < deadline_ms_)
        return;
    int running = 0;
    deadline_ms_ = -1; /* curl sets the next one from inside the call */
    curl_multi_socket_action(static_cast<CURLM *>(multi_), CURL_SOCKET_TIMEOUT, 0, &running);
    collect();
}

/* Move finished transfers to done_, and their handles to the idle pool. */
void HttpPipeline::collect()
{
    CURLM *m = static_cast<CURLM *>(multi_);
    int queued = 0;
    while (CURLMsg *msg = curl_multi_info_read(m, &queued)) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        auto it =
            std::find_if(active_.begin(), active_.end(),
                         [easy](const std::unique_ptr<Transfer> &t) { return t->easy == easy; });
        if (it == active_.end())
            continue;
        std::unique_ptr<Transfer> t = std::move(*it);
        active_.erase(it);
        curl_multi_remove_handle(m, easy);
        if (result != CURLE_OK) {
            t->response.status = 0;
            t->response.transport_error = redact(!t->source_error.empty() ? t->source_error
                                                 : t->error[0]            ? t->error
                                                               : curl_easy_strerror(result),
                                                 request_secrets(t->request));
        } else {
            curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &t->response.status);
        }
        curl_slist_free_all(t->headers);
        /* No pointer into the transfer stays on the handle; the multi keeps the connection. */
        curl_easy_reset(easy);
        if (idle_easy_.size() < kIdleHandles)
            idle_easy_.push_back(easy);
        else
            curl_easy_cleanup(easy);
        done_.emplace_back(t->tag, std::move(t->response));
    }
}

std::vector<std::pair<uint64_t, HttpResponse>> HttpPipeline::take_done()
{
    std::vector<std::pair<uint64_t, HttpResponse>> out;
    out.swap(done_);
    return out;
}

void HttpPipeline::cancel_all()
{
    CURLM *m = static_cast<CURLM *>(multi_);
    for (std::unique_ptr<Transfer> &t : active_) {
        curl_multi_remove_handle(m, t->easy);
        curl_slist_free_all(t->headers);
        curl_easy_cleanup(t->easy);
    }
    active_.clear();
    delayed_.clear();
    done_.clear();
}

std::string answer_excerpt(const std::string &body, size_t max)
{
    std::string s = body.substr(0, max);
    std::string out;
    for (size_t i = 0; i < s.size();) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = n > 0 && i + n <= s.size();
        for (size_t k = 1; ok && k < n; k++)
            ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 2;
        if (ok && n == 1 && c < 0x20)
            out.push_back(' '); /* one line in logs */
        else if (ok)
            out.append(s, i, n);
        else
            out.push_back('?');
        i += ok ? n : 1;
    }
    return out;
}

std::string url_for_messages(const std::string &u)
{
    size_t scheme = u.find("://");
    size_t host = scheme == std::string::npos ? 0 : scheme + 3;
    size_t end = u.find_first_of("/?#", host);
    std::string authority =
        u.substr(host, end == std::string::npos ? std::string::npos : end - host);
    size_t at = authority.rfind('@');
    if (at != std::string::npos)
        authority.erase(0, at + 1);
    return u.substr(0, host) + authority;
}

long retry_after_ms(const std::string &value, long now_unix)
{
    if (value.empty())
        return -1;
    bool digits = true;
    for (char c : value)
        digits = digits && isdigit(static_cast<unsigned char>(c));
    if (digits)
        return value.size() > 9 ? -1 : std::stol(value) * 1000;
    /* An HTTP date, in any of its three forms (RFC 9110, 5.6.7). */
    static const char *const kForms[] = {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT",
                                         "%a %b %e %H:%M:%S %Y"};
    for (const char *form : kForms) {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        const char *end = strptime(value.c_str(), form, &tm);
        if (end == nullptr || *end != '\0')
            continue;
        long at = static_cast<long>(timegm(&tm));
        return at > now_unix ? (at - now_unix) * 1000 : 0;
    }
    return -1;
}

} // namespace pgsink
