/*
 * sink_factory.cpp: see sink_factory.h. The one place that reads the
 * sinks' settings (GUCs) and maps a sink name to a class.
 */
#include <cstring>

#include "sinks/sink_factory.h"
#include "core/config.h"
#include "sinks/file_sink.h"
#include "sinks/webhook_sink.h"

#include "core/digest.h"

namespace pgsink
{

bool sink_known(const char *name)
{
    return strcmp(name, "file") == 0 || strcmp(name, "webhook") == 0;
}

const char *known_sink_names()
{
    return "file, webhook";
}

static WebhookSink::Settings webhook_settings()
{
    WebhookSink::Settings w;
    w.url = guc_webhook_url ? guc_webhook_url : "";
    w.secret = guc_webhook_secret ? guc_webhook_secret : "";
    w.headers = guc_webhook_headers ? guc_webhook_headers : "";
    w.gzip = guc_webhook_gzip;
    w.http.timeout_ms = guc_http_timeout_ms;
    w.http.ca_file = guc_ca_file ? guc_ca_file : "";
    return w;
}

std::unique_ptr<Sink> make_sink(const std::string &name)
{
    if (name == "file")
        return std::make_unique<FileSink>(guc_file_path);
    if (name == "webhook")
        return std::make_unique<WebhookSink>(webhook_settings());
    throw std::runtime_error("pgsink: unknown sink \"" + name + "\"");
}

std::string sink_settings(const std::string &name)
{
    if (name == "file")
        return std::string("file:") + guc_file_path;
    if (name == "webhook") {
        WebhookSink::Settings w = webhook_settings();
        /* Settings that hold secrets are compared by digest, never kept in the clear. */
        return "webhook:" + sha256_hex(w.url + '\n' + w.secret + '\n' + w.headers) + ":" +
               std::to_string(w.http.timeout_ms) + ":" + w.http.ca_file + ":" +
               (w.gzip ? "gzip" : "plain");
    }
    return "unknown";
}

} // namespace pgsink
