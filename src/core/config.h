/*
 * config.h: pgsink's GUCs (postgresql.conf settings under "pgsink.").
 */
#pragma once

extern "C" {
#include "postgres.h"
}

namespace pgsink
{

extern char *guc_database;
extern char *guc_sinks; /* pgsink.sink: a comma-separated list of sink names */
extern char *guc_file_path;
extern char *guc_slot_name;
extern int guc_batch_rows;
extern int guc_batch_bytes_kb;
extern int guc_flush_interval_ms;
extern int guc_poll_interval_ms;
extern int guc_retry_max_interval_ms;
extern int guc_import_chunk_rows;
extern int guc_import_chunk_time_ms;
extern char *guc_webhook_url;
extern char *guc_clickhouse_url;
extern char *guc_clickhouse_database;
extern char *guc_clickhouse_user;
extern char *guc_clickhouse_password;
extern char *guc_elasticsearch_url;
extern char *guc_elasticsearch_index_prefix;
extern char *guc_elasticsearch_api_key;
extern char *guc_elasticsearch_user;
extern char *guc_elasticsearch_password;
/* pgsink.elasticsearch_json: how json and jsonb columns are mapped. */
enum ElasticsearchJson { ES_JSON_FLATTENED = 0, ES_JSON_STORED };
extern int guc_elasticsearch_json;
extern char *guc_bigquery_project;
extern char *guc_bigquery_dataset;
extern char *guc_bigquery_location;
extern char *guc_bigquery_credentials;
extern char *guc_bigquery_endpoint;
extern int guc_bigquery_max_rows;
extern int guc_bigquery_max_request_kb;
extern int guc_bigquery_load_min_rows;
extern char *guc_webhook_secret;
extern char *guc_webhook_headers;
extern bool guc_webhook_gzip;
extern int guc_http_timeout_ms;
/* pgsink.on_rejection: what a delivery worker does with entries a sink refuses for good. */
enum OnRejection { ON_REJECTION_DEAD_LETTER = 0, ON_REJECTION_STOP };
extern int guc_on_rejection;
extern int guc_max_in_flight;
extern char *guc_ca_file;
extern char *guc_spool_directory;
extern char *guc_metrics_listen; /* host:port of the metrics endpoint; "" off */
extern bool guc_auto_resync;     /* resync every captured table after a lost slot */

/*
 * Split "host:port" ("[v6addr]:port" for IPv6) into its parts; false if it
 * is not of that form (port 1-65535).
 */
bool split_host_port(const char *value, char *host, size_t host_size, char *port, size_t port_size);
extern int guc_spool_retention_s;
extern int guc_spool_max_size_mb;
extern int guc_spool_segment_size_mb;

/* Longest sink name (a sink name is also a file name in the spool directory). */
constexpr int kSinkNameLen = 32;

/*
 * The sinks pgsink.sink lists, in order, into names (at most kMaxSinks);
 * returns how many. The list was validated by the GUC's check hook.
 */
int configured_sinks(char (*names)[kSinkNameLen]);
/* Is the sink with this name in pgsink.sink? */
bool sink_configured(const char *name);

/* Define every GUC; called once from _PG_init. */
void define_gucs();

/* From _PG_init: no log message shows the value of a secret setting (secret_log.cpp). */
void install_secret_redaction();

/*
 * Why the server cannot run pgsink as configured (wal_level, the output
 * plugin whitelist), or nullptr when it can. The message says what to set.
 */
const char *server_config_problem();

} // namespace pgsink
