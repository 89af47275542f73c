/*
 * sink_factory.cpp: see sink_factory.h. The one place that reads the
 * sinks' settings (GUCs) and maps a sink name to a class.
 */
#include <cstring>

#include "sinks/sink_factory.h"
#include "core/config.h"
#include "sinks/file_sink.h"
#include "sinks/bigquery_sink.h"
#include "sinks/clickhouse_sink.h"
#include "sinks/elasticsearch_sink.h"
#include "sinks/webhook_sink.h"

#include "core/digest.h"

namespace pgsink
{

bool sink_known(const char *name)
{
    return strcmp(name, "file") == 0 || strcmp(name, "webhook") == 0 ||
           strcmp(name, "clickhouse") == 0 || strcmp(name, "elasticsearch") == 0 ||
           strcmp(name, "bigquery") == 0;
}

const char *known_sink_names()
{
    return "file, webhook, clickhouse, elasticsearch, bigquery";
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

static ClickHouseSink::Settings clickhouse_settings()
{
    ClickHouseSink::Settings c;
    c.url = guc_clickhouse_url ? guc_clickhouse_url : "";
    while (!c.url.empty() && c.url.back() == '/')
        c.url.pop_back();
    c.database = guc_clickhouse_database ? guc_clickhouse_database : "pgsink";
    c.user = guc_clickhouse_user ? guc_clickhouse_user : "";
    c.password = guc_clickhouse_password ? guc_clickhouse_password : "";
    c.http.timeout_ms = guc_http_timeout_ms;
    c.http.ca_file = guc_ca_file ? guc_ca_file : "";
    return c;
}

static ElasticsearchSink::Settings elasticsearch_settings()
{
    ElasticsearchSink::Settings e;
    e.url = guc_elasticsearch_url ? guc_elasticsearch_url : "";
    while (!e.url.empty() && e.url.back() == '/')
        e.url.pop_back();
    e.index_prefix = guc_elasticsearch_index_prefix ? guc_elasticsearch_index_prefix : "pgsink-";
    e.api_key = guc_elasticsearch_api_key ? guc_elasticsearch_api_key : "";
    e.user = guc_elasticsearch_user ? guc_elasticsearch_user : "";
    e.password = guc_elasticsearch_password ? guc_elasticsearch_password : "";
    e.json_stored = guc_elasticsearch_json == ES_JSON_STORED;
    e.http.timeout_ms = guc_http_timeout_ms;
    e.http.ca_file = guc_ca_file ? guc_ca_file : "";
    return e;
}

static BigQuerySink::Settings bigquery_settings()
{
    BigQuerySink::Settings b;
    b.project = guc_bigquery_project ? guc_bigquery_project : "";
    b.dataset = guc_bigquery_dataset ? guc_bigquery_dataset : "";
    b.location = guc_bigquery_location ? guc_bigquery_location : "";
    b.credentials = guc_bigquery_credentials ? guc_bigquery_credentials : "";
    b.endpoint = guc_bigquery_endpoint ? guc_bigquery_endpoint : "";
    b.max_rows = guc_bigquery_max_rows;
    b.max_bytes = static_cast<size_t>(guc_bigquery_max_request_kb) * 1024;
    b.load_min_rows = guc_bigquery_load_min_rows;
    b.http.timeout_ms = guc_http_timeout_ms;
    b.http.ca_file = guc_ca_file ? guc_ca_file : "";
    return b;
}

std::unique_ptr<Sink> make_sink(const std::string &name)
{
    if (name == "elasticsearch")
        return std::make_unique<ElasticsearchSink>(elasticsearch_settings());
    if (name == "bigquery")
        return std::make_unique<BigQuerySink>(bigquery_settings());
    if (name == "clickhouse")
        return std::make_unique<ClickHouseSink>(clickhouse_settings());
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
    if (name == "clickhouse") {
        ClickHouseSink::Settings c = clickhouse_settings();
        return "clickhouse:" + sha256_hex(c.url + '\n' + c.user + '\n' + c.password) + ":" +
               c.database + ":" + std::to_string(c.http.timeout_ms) + ":" + c.http.ca_file;
    }
    if (name == "elasticsearch") {
        ElasticsearchSink::Settings e = elasticsearch_settings();
        return "elasticsearch:" +
               sha256_hex(e.url + '\n' + e.api_key + '\n' + e.user + '\n' + e.password) + ":" +
               e.index_prefix + ":" + (e.json_stored ? "stored" : "flattened") + ":" +
               std::to_string(e.http.timeout_ms) + ":" + e.http.ca_file;
    }
    if (name == "bigquery") {
        BigQuerySink::Settings b = bigquery_settings();
        return "bigquery:" +
               sha256_hex(b.endpoint + '\n' + b.credentials + '\n' + b.project + '\n' + b.dataset +
                          '\n' + b.location) +
               ":" + std::to_string(b.max_rows) + ":" + std::to_string(b.max_bytes) + ":" +
               std::to_string(b.load_min_rows) + ":" + std::to_string(b.http.timeout_ms) + ":" +
               b.http.ca_file;
    }
    return "unknown";
}

} // namespace pgsink
