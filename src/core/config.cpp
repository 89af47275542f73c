/*
 * config.cpp: definition and validation of pgsink's GUCs.
 *
 * Every setting is PGC_SIGHUP unless changing it while running would strand
 * resources (the slot name: a renamed slot would leave the old one holding
 * WAL), and every string has a check hook that says what a valid value is.
 */
#include <cstdlib>
#include <cstring>
#include <string>

#include "sinks/elasticsearch_sink.h" /* pure C++: before PostgreSQL's headers */
#include "core/config.h"
#include "core/shared_state.h"
#include "sinks/sink_factory.h"

extern "C" {
#include "access/xlog.h"
#include "replication/logical.h"
#include "utils/guc.h"
#include "utils/varlena.h"
#include "nodes/pg_list.h"
}

namespace pgsink
{

char *guc_database = nullptr;
char *guc_sinks = nullptr;
char *guc_file_path = nullptr;
char *guc_slot_name = nullptr;
int guc_batch_rows = 10000;
int guc_batch_bytes_kb = 16 * 1024;
int guc_flush_interval_ms = 200;
int guc_poll_interval_ms = 20;
int guc_retry_max_interval_ms = 60000;
int guc_import_chunk_rows = 20000;
int guc_import_chunk_time_ms = 100;
char *guc_webhook_url = nullptr;
char *guc_clickhouse_url = nullptr;
char *guc_clickhouse_database = nullptr;
char *guc_clickhouse_user = nullptr;
char *guc_clickhouse_password = nullptr;
char *guc_elasticsearch_url = nullptr;
char *guc_elasticsearch_index_prefix = nullptr;
char *guc_elasticsearch_api_key = nullptr;
char *guc_elasticsearch_user = nullptr;
char *guc_elasticsearch_password = nullptr;
int guc_elasticsearch_json = ES_JSON_FLATTENED;
static const struct config_enum_entry elasticsearch_json_options[] = {
    {"flattened", ES_JSON_FLATTENED, false},
    {"stored", ES_JSON_STORED, false},
    {nullptr, 0, false},
};
char *guc_bigquery_project = nullptr;
char *guc_bigquery_dataset = nullptr;
char *guc_bigquery_location = nullptr;
char *guc_bigquery_credentials = nullptr;
char *guc_bigquery_endpoint = nullptr;
int guc_bigquery_max_rows = 500;
int guc_bigquery_max_request_kb = 9 * 1024;
int guc_bigquery_load_min_rows = 10000;
char *guc_webhook_secret = nullptr;
char *guc_webhook_headers = nullptr;
bool guc_webhook_gzip = false;
int guc_http_timeout_ms = 30000;
int guc_on_rejection = ON_REJECTION_DEAD_LETTER;
int guc_max_in_flight = 0;

static const struct config_enum_entry on_rejection_options[] = {
    {"dead_letter", ON_REJECTION_DEAD_LETTER, false},
    {"stop", ON_REJECTION_STOP, false},
    {nullptr, 0, false},
};
char *guc_ca_file = nullptr;
char *guc_spool_directory = nullptr;
int guc_spool_retention_s = 0;
int guc_spool_max_size_mb = 10240;
int guc_spool_segment_size_mb = 64;
char *guc_metrics_listen = nullptr;
bool guc_auto_resync = true;

/*
 * Split a pgsink.sink value into names: comma-separated, blanks around a
 * name ignored, case-folded. Returns the count, or -1 with *why set.
 */
static int split_sinks(const char *value, char (*names)[kSinkNameLen], const char **why)
{
    int n = 0;
    const char *p = value;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *start = p;
        while (*p != '\0' && *p != ',')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        size_t len = static_cast<size_t>(end - start);
        if (len == 0) {
            *why = "pgsink.sink must list sink names separated by commas, for example 'file' or "
                   "'file, webhook'; an empty name is not allowed.";
            return -1;
        }
        if (n >= kMaxSinks) {
            *why = "pgsink.sink lists more sinks than pgsink supports at once (8).";
            return -1;
        }
        if (len >= static_cast<size_t>(kSinkNameLen)) {
            *why = "A sink name is at most 31 bytes long.";
            return -1;
        }
        for (size_t i = 0; i < len; i++) {
            char c = start[i];
            if (c >= 'A' && c <= 'Z')
                c = static_cast<char>(c - 'A' + 'a');
            names[n][i] = c;
        }
        names[n][len] = '\0';
        for (int j = 0; j < n; j++)
            if (strcmp(names[j], names[n]) == 0) {
                *why = "pgsink.sink lists a sink twice.";
                return -1;
            }
        n++;
        if (*p == '\0')
            return n;
        p++; /* the comma */
    }
}

/* pgsink.sink: a list of known sink names. */
static bool check_sinks(char **newval, void **extra, GucSource source)
{
    char names[kMaxSinks][kSinkNameLen];
    const char *why = nullptr;
    int n = *newval ? split_sinks(*newval, names, &why) : -1;
    if (n < 0) {
        GUC_check_errdetail("%s", why ? why : "pgsink.sink must name at least one sink.");
        return false;
    }
    for (int i = 0; i < n; i++)
        if (!sink_known(names[i])) {
            GUC_check_errdetail("Unknown sink \"%s\"; the sinks are: %s.", names[i],
                                known_sink_names());
            return false;
        }
    return true;
}

int configured_sinks(char (*names)[kSinkNameLen])
{
    const char *why = nullptr;
    int n = split_sinks(guc_sinks ? guc_sinks : "", names, &why);
    return n < 0 ? 0 : n;
}

bool sink_configured(const char *name)
{
    char names[kMaxSinks][kSinkNameLen];
    int n = configured_sinks(names);
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

/* pgsink.webhook_url: empty, or an http:// or https:// URL. */
static bool check_url(char **newval, void **extra, GucSource source)
{
    const char *url = *newval;
    if (url == nullptr || url[0] == '\0')
        return true;
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        GUC_check_errdetail("A sink URL must start with http:// or https://.");
        return false;
    }
    return true;
}

/* pgsink.spool_directory: a directory, absolute or relative to the data directory. */
static bool check_spool_directory(char **newval, void **extra, GucSource source)
{
    const char *path = *newval;
    if (path == nullptr || path[0] == '\0') {
        GUC_check_errdetail("pgsink.spool_directory must name a directory (default "
                            "pgsink_spool, in the data directory).");
        return false;
    }
    if (strlen(path) >= MAXPGPATH - 64) {
        GUC_check_errdetail("pgsink.spool_directory is too long.");
        return false;
    }
    return true;
}

bool split_host_port(const char *value, char *host, size_t host_size, char *port, size_t port_size)
{
    const char *colon = strrchr(value, ':');
    if (colon == nullptr || colon == value)
        return false;
    const char *h = value;
    size_t hlen = static_cast<size_t>(colon - value);
    if (h[0] == '[') {
        if (hlen < 3 || h[hlen - 1] != ']')
            return false;
        h++;
        hlen -= 2;
    } else if (memchr(h, ':', hlen) != nullptr) {
        return false; /* an IPv6 address needs brackets */
    }
    if (hlen == 0 || hlen >= host_size)
        return false;
    const char *p = colon + 1;
    size_t plen = strlen(p);
    if (plen == 0 || plen > 5 || plen >= port_size || strspn(p, "0123456789") != plen)
        return false;
    long n = strtol(p, nullptr, 10);
    if (n < 1 || n > 65535)
        return false;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memcpy(port, p, plen + 1);
    return true;
}

/* pgsink.metrics_listen: empty, or host:port. */
static bool check_metrics_listen(char **newval, void **extra, GucSource source)
{
    char host[256], port[16];
    if (*newval == nullptr || (*newval)[0] == '\0')
        return true;
    if (!split_host_port(*newval, host, sizeof(host), port, sizeof(port))) {
        GUC_check_errdetail("pgsink.metrics_listen must be host:port, for example "
                            "127.0.0.1:9187 or [::1]:9187 (empty: no endpoint).");
        return false;
    }
    return true;
}

/* pgsink.database: a database name, which must fit in NAMEDATALEN. */
static bool check_database(char **newval, void **extra, GucSource source)
{
    if (*newval == nullptr || (*newval)[0] == '\0') {
        GUC_check_errdetail("pgsink.database must name the database whose tables are captured.");
        return false;
    }
    if (strlen(*newval) >= NAMEDATALEN) {
        GUC_check_errdetail("Database names are at most %d bytes long.", NAMEDATALEN - 1);
        return false;
    }
    return true;
}

/*
 * pgsink.slot_name: the rules of ReplicationSlotValidateName, checked here
 * without ereport so that a bad value is refused at load time.
 */
static bool check_slot_name(char **newval, void **extra, GucSource source)
{
    const char *name = *newval;
    if (name == nullptr || name[0] == '\0') {
        GUC_check_errdetail("pgsink.slot_name must not be empty.");
        return false;
    }
    if (strlen(name) >= NAMEDATALEN) {
        GUC_check_errdetail("Replication slot names are at most %d bytes long.", NAMEDATALEN - 1);
        return false;
    }
    for (const char *p = name; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) {
            GUC_check_errdetail(
                "Replication slot names may only contain lower case letters, digits and "
                "underscores.");
            return false;
        }
    }
    return true;
}

/* pgsink.file_path: a file, absolute or relative to the data directory. */
static bool check_file_path(char **newval, void **extra, GucSource source)
{
    const char *path = *newval;
    if (path == nullptr || path[0] == '\0') {
        GUC_check_errdetail("pgsink.file_path must name the file changes are appended to.");
        return false;
    }
    size_t len = strlen(path);
    if (path[len - 1] == '/') {
        GUC_check_errdetail("pgsink.file_path must name a file, not a directory.");
        return false;
    }
    if (len >= MAXPGPATH) {
        GUC_check_errdetail("pgsink.file_path is longer than %d bytes.", MAXPGPATH - 1);
        return false;
    }
    return true;
}

/* pgsink.elasticsearch_index_prefix: what Elasticsearch takes at the start of index names. */
static bool check_elasticsearch_prefix(char **newval, void **extra, GucSource source)
{
    std::string why = elasticsearch_prefix_problem(*newval ? *newval : "");
    if (!why.empty()) {
        GUC_check_errdetail("%s.", why.c_str());
        return false;
    }
    return true;
}

void define_gucs()
{
    DefineCustomStringVariable(
        "pgsink.database", "Database whose tables pgsink captures.",
        "The stream worker connects to this database; pgsink waits for it and for CREATE "
        "EXTENSION pgsink in it.",
        &guc_database, "postgres", PGC_SIGHUP, 0, check_database, nullptr, nullptr);

    DefineCustomStringVariable(
        "pgsink.sink", "Where captured changes are delivered: a comma-separated list of sinks.",
        "Each sink gets its own delivery worker and its own position in the spool.", &guc_sinks,
        "file", PGC_SIGHUP, GUC_LIST_INPUT, check_sinks, nullptr, nullptr);

    DefineCustomStringVariable(
        "pgsink.webhook_url", "URL the webhook sink POSTs batches of entries to.",
        "http:// or https://; certificates are verified (pgsink.ca_file for a private CA).",
        &guc_webhook_url, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, check_url, nullptr,
        nullptr);

    DefineCustomStringVariable(
        "pgsink.clickhouse_url",
        "HTTP interface of the ClickHouse server the clickhouse sink writes to.",
        "For example http://127.0.0.1:8123.", &guc_clickhouse_url, "", PGC_SIGHUP,
        GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, check_url, nullptr, nullptr);
    DefineCustomStringVariable("pgsink.clickhouse_database",
                               "ClickHouse database of the captured tables (created if missing).",
                               nullptr, &guc_clickhouse_database, "pgsink", PGC_SIGHUP, 0, nullptr,
                               nullptr, nullptr);
    DefineCustomStringVariable("pgsink.clickhouse_user", "ClickHouse user of the clickhouse sink.",
                               "Empty: ClickHouse's default user.", &guc_clickhouse_user, "",
                               PGC_SIGHUP, GUC_SUPERUSER_ONLY, nullptr, nullptr, nullptr);
    DefineCustomStringVariable("pgsink.clickhouse_password",
                               "Password of pgsink.clickhouse_user (a secret).", nullptr,
                               &guc_clickhouse_password, "", PGC_SIGHUP,
                               GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, nullptr, nullptr, nullptr);

    DefineCustomStringVariable("pgsink.elasticsearch_url",
                               "HTTP interface of the Elasticsearch cluster of the "
                               "elasticsearch sink.",
                               "For example https://127.0.0.1:9200.", &guc_elasticsearch_url, "",
                               PGC_SIGHUP, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, check_url, nullptr,
                               nullptr);
    DefineCustomStringVariable("pgsink.elasticsearch_index_prefix",
                               "Start of the name of each captured table's Elasticsearch index.",
                               "An index is named <prefix><schema>.<table>, lower-cased.",
                               &guc_elasticsearch_index_prefix, "pgsink-", PGC_SIGHUP, 0,
                               check_elasticsearch_prefix, nullptr, nullptr);
    DefineCustomStringVariable("pgsink.elasticsearch_api_key",
                               "API key of the elasticsearch sink (a secret), as Elasticsearch "
                               "encodes it (base64 of id:key).",
                               "Empty: pgsink.elasticsearch_user and _password, or none.",
                               &guc_elasticsearch_api_key, "", PGC_SIGHUP,
                               GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, nullptr, nullptr, nullptr);
    DefineCustomStringVariable("pgsink.elasticsearch_user",
                               "Elasticsearch user of the elasticsearch sink (basic auth).",
                               "Empty: no basic auth.", &guc_elasticsearch_user, "", PGC_SIGHUP,
                               GUC_SUPERUSER_ONLY, nullptr, nullptr, nullptr);
    DefineCustomStringVariable("pgsink.elasticsearch_password",
                               "Password of pgsink.elasticsearch_user (a secret).", nullptr,
                               &guc_elasticsearch_password, "", PGC_SIGHUP,
                               GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, nullptr, nullptr, nullptr);
    DefineCustomEnumVariable(
        "pgsink.elasticsearch_json", "How the elasticsearch sink maps json and jsonb columns.",
        "flattened: searchable by key path, but Elasticsearch refuses a value that is not an "
        "object (its row is parked); stored: any JSON value, kept in _source, not searchable. "
        "Applies to fields not yet in an index's mapping.",
        &guc_elasticsearch_json, ES_JSON_FLATTENED, elasticsearch_json_options, PGC_SIGHUP, 0,
        nullptr, nullptr, nullptr);
    DefineCustomStringVariable("pgsink.bigquery_project",
                               "Google Cloud project of the bigquery sink's dataset.",
                               "Empty: the project_id of pgsink.bigquery_credentials.",
                               &guc_bigquery_project, "", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomStringVariable(
        "pgsink.bigquery_dataset", "BigQuery dataset of the captured tables (created if missing).",
        nullptr, &guc_bigquery_dataset, "pgsink", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomStringVariable("pgsink.bigquery_location",
                               "Location of the BigQuery dataset when pgsink creates it, and of "
                               "its load jobs.",
                               "For example US, EU or europe-west1.", &guc_bigquery_location, "US",
                               PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomStringVariable(
        "pgsink.bigquery_credentials",
        "Path of the JSON key file of the service account the bigquery sink acts as.",
        "Readable by the server's operating system user only: it holds a private key.",
        &guc_bigquery_credentials, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, nullptr,
        nullptr, nullptr);
    DefineCustomStringVariable("pgsink.bigquery_endpoint", "Base URL of the BigQuery REST API.",
                               "Tests point it at a local server.", &guc_bigquery_endpoint,
                               "https://bigquery.googleapis.com", PGC_SIGHUP,
                               GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, check_url, nullptr, nullptr);
    DefineCustomIntVariable("pgsink.bigquery_max_rows", "Most rows in one insertAll request.",
                            "BigQuery recommends 500.", &guc_bigquery_max_rows, 500, 1, 50000,
                            PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("pgsink.bigquery_max_request_size",
                            "Most bytes of one insertAll request.", "BigQuery refuses over 10 MB.",
                            &guc_bigquery_max_request_kb, 9 * 1024, 64, 10 * 1024, PGC_SIGHUP,
                            GUC_UNIT_KB, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("pgsink.bigquery_load_min_rows",
                            "Import rows of a table in one batch from which they are loaded with "
                            "a load job instead of streamed.",
                            "0: imports are always streamed.", &guc_bigquery_load_min_rows, 10000,
                            0, INT_MAX, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);

    /*
     * No check hook: PostgreSQL would log a refused value, and this one is
     * a secret. A malformed secret is reported by the sink, without it.
     */
    DefineCustomStringVariable("pgsink.webhook_secret",
                               "Secret that signs webhook requests (Standard Webhooks: "
                               "whsec_<base64>).",
                               "Empty: requests are not signed.", &guc_webhook_secret, "",
                               PGC_SIGHUP, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, nullptr, nullptr,
                               nullptr);

    DefineCustomStringVariable(
        "pgsink.webhook_headers", "Extra headers of webhook requests, \"Name: value\" a line.",
        "For example 'Authorization: Bearer ...'. A secret, as pgsink.webhook_secret.",
        &guc_webhook_headers, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, nullptr,
        nullptr, nullptr);

    DefineCustomBoolVariable("pgsink.webhook_gzip", "Compress webhook request bodies with gzip.",
                             "The signature covers the uncompressed JSON.", &guc_webhook_gzip,
                             false, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);

    DefineCustomEnumVariable(
        "pgsink.on_rejection", "What to do with entries a sink refuses for good.",
        "dead_letter: isolate them (bisecting the batch), park them in pgsink.dead_letters and "
        "go on; stop: hold the sink, retrying with back-off, until the receiver accepts them.",
        &guc_on_rejection, ON_REJECTION_DEAD_LETTER, on_rejection_options, PGC_SIGHUP, 0, nullptr,
        nullptr, nullptr);

    DefineCustomIntVariable(
        "pgsink.max_in_flight", "Most requests an HTTP sink keeps open at once.",
        "0: the sink's own default (1 for the webhook, so batches arrive in commit order). "
        "With more, batches may arrive out of order; each entry carries (lsn, sequence). "
        "Memory: about twice max_in_flight + 1 times pgsink.batch_bytes per sink.",
        &guc_max_in_flight, 0, 0, 64, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);

    DefineCustomIntVariable("pgsink.http_timeout",
                            "Longest an HTTP request of a sink may take, answer included.", nullptr,
                            &guc_http_timeout_ms, 30000, 100, 600000, PGC_SIGHUP, GUC_UNIT_MS,
                            nullptr, nullptr, nullptr);

    DefineCustomStringVariable("pgsink.ca_file",
                               "File of CA certificates that HTTP sinks trust, besides none.",
                               "Empty: the system's CA certificates.", &guc_ca_file, "", PGC_SIGHUP,
                               GUC_SUPERUSER_ONLY, nullptr, nullptr, nullptr);

    DefineCustomStringVariable(
        "pgsink.spool_directory", "Directory of the spool, the durable changelog sinks read.",
        "Absolute, or relative to the data directory. Changing it needs a restart: a spool "
        "left behind would hold entries no sink reads.",
        &guc_spool_directory, "pgsink_spool", PGC_POSTMASTER, 0, check_spool_directory, nullptr,
        nullptr);

    DefineCustomBoolVariable(
        "pgsink.auto_resync",
        "Resync every captured table by itself when the replication slot was lost.",
        "When the slot is missing or invalidated while tables are captured, the stream worker "
        "creates it again and resyncs every captured table (pgsink.resync()), so that sinks hold "
        "exactly the tables' rows again. Off: it only says what was lost.",
        &guc_auto_resync, true, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);

    DefineCustomStringVariable(
        "pgsink.metrics_listen",
        "Address (host:port) where a pgsink worker serves pgsink.metrics() over HTTP.",
        "For Prometheus to scrape GET /metrics, e.g. 127.0.0.1:9187; empty (the default): no "
        "endpoint. No authentication: use a loopback or private address. Needs a restart.",
        &guc_metrics_listen, "", PGC_POSTMASTER, 0, check_metrics_listen, nullptr, nullptr);

    DefineCustomIntVariable(
        "pgsink.spool_retention", "How long delivered spool segments are kept.",
        "0 removes a segment as soon as every sink delivered past it; kept segments let "
        "pgsink.rewind_sink() replay a sink from an earlier point.",
        &guc_spool_retention_s, 0, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr, nullptr);

    DefineCustomIntVariable(
        "pgsink.spool_max_size", "Most disk the spool may use.",
        "Past it the stream worker stops decoding (the slot keeps the WAL) until sinks catch up. "
        "0: no limit.",
        &guc_spool_max_size_mb, 10240, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_MB, nullptr, nullptr,
        nullptr);

    DefineCustomIntVariable(
        "pgsink.spool_segment_size", "Size at which the spool starts a new segment file.",
        "Segments are removed whole, once delivered.", &guc_spool_segment_size_mb, 64, 1, 1024,
        PGC_SIGHUP, GUC_UNIT_MB, nullptr, nullptr, nullptr);

    DefineCustomStringVariable("pgsink.file_path", "File the file sink appends JSON lines to.",
                               "Absolute, or relative to the data directory.", &guc_file_path,
                               "pgsink.jsonl", PGC_SIGHUP, GUC_SUPERUSER_ONLY, check_file_path,
                               nullptr, nullptr);

    DefineCustomStringVariable(
        "pgsink.slot_name", "Logical replication slot pgsink consumes.",
        "Created by the stream worker if missing. Changing it needs a restart, so that no "
        "abandoned slot keeps holding WAL unnoticed.",
        &guc_slot_name, "pgsink", PGC_POSTMASTER, 0, check_slot_name, nullptr, nullptr);

    DefineCustomIntVariable("pgsink.batch_rows", "Changes buffered before a batch is flushed.",
                            nullptr, &guc_batch_rows, 10000, 1, 1000000, PGC_SIGHUP, 0, nullptr,
                            nullptr, nullptr);

    DefineCustomIntVariable("pgsink.batch_bytes", "Bytes buffered before a batch is flushed.",
                            "Bounds the stream worker's memory together with the largest row.",
                            &guc_batch_bytes_kb, 16 * 1024, 64, 1024 * 1024, PGC_SIGHUP,
                            GUC_UNIT_KB, nullptr, nullptr, nullptr);

    DefineCustomIntVariable(
        "pgsink.flush_interval", "Longest time a change waits in a batch before it is flushed.",
        "When the stream is caught up, batches are flushed at once.", &guc_flush_interval_ms, 200,
        1, 60000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);

    DefineCustomIntVariable("pgsink.poll_interval", "How often an idle stream looks for new WAL.",
                            nullptr, &guc_poll_interval_ms, 20, 1, 10000, PGC_SIGHUP, GUC_UNIT_MS,
                            nullptr, nullptr, nullptr);

    DefineCustomIntVariable("pgsink.retry_max_interval",
                            "Longest back-off between retries of a failing sink or worker.",
                            nullptr, &guc_retry_max_interval_ms, 60000, 100, 3600000, PGC_SIGHUP,
                            GUC_UNIT_MS, nullptr, nullptr, nullptr);

    DefineCustomIntVariable("pgsink.import_chunk_rows", "Most rows an import reads per chunk.",
                            "Each chunk is one short transaction.", &guc_import_chunk_rows, 20000,
                            100, 1000000, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);

    DefineCustomIntVariable(
        "pgsink.import_chunk_time", "Time an import chunk should take to read.",
        "The chunk size adapts to it, so a large import does not delay streamed changes.",
        &guc_import_chunk_time_ms, 100, 10, 60000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr,
        nullptr);

    MarkGUCPrefixReserved("pgsink");
}

/* Does output_plugin_libraries allow the library named "pgsink"? */
static bool output_plugin_allowed()
{
    if (output_plugin_libraries_string == nullptr)
        return true;
    char *raw = pstrdup(output_plugin_libraries_string);
    List *names = NIL;
    bool allowed = false;
    if (SplitDirectoriesString(raw, ',', &names)) {
        ListCell *lc;
        foreach (lc, names) {
            const char *name = static_cast<const char *>(lfirst(lc));
            const char *base = strrchr(name, '/');
            base = base ? base + 1 : name;
            if (strcmp(base, "pgsink") == 0 || strcmp(base, "pgsink.so") == 0)
                allowed = true;
        }
    }
    list_free_deep(names);
    pfree(raw);
    return allowed;
}

const char *server_config_problem()
{
    if (wal_level < WAL_LEVEL_LOGICAL)
        return "wal_level must be \"logical\" for pgsink to capture changes: set wal_level = "
               "logical in postgresql.conf and restart the server";
    if (!output_plugin_allowed())
        return "output_plugin_libraries does not include pgsink: add it in postgresql.conf "
               "(for example output_plugin_libraries = 'pgoutput, test_decoding, pgsink') and "
               "reload";
    return nullptr;
}

} // namespace pgsink
