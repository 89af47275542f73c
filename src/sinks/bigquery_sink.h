/*
 * bigquery_sink.h: captured tables replicated into Google BigQuery over its
 * REST API v2 (pgsink.sink = 'bigquery'), issue 13.
 *
 * In dataset pgsink.bigquery_dataset of pgsink.bigquery_project (created in
 * pgsink.bigquery_location if missing), each captured table <schema>.<table>
 * gets
 *   - a raw table <schema>_<table>_raw holding every change: the row's
 *     columns (types: bigquery_schema.h) and _pgsink_lsn, _pgsink_sequence,
 *     _pgsink_op (the old key of an update that changed it: a delete row),
 *     _pgsink_timestamp, _pgsink_xid,
 *     _pgsink_unchanged; partitioned by day of _pgsink_timestamp, clustered
 *     by the key;
 *   - a view <schema>_<table> (standard SQL) of the current rows: the latest
 *     change per key by (_pgsink_lsn, _pgsink_sequence), deleted keys and
 *     rows before the last TRUNCATE left out, an unchanged TOASTed column
 *     taking the key's latest value sent. Tables without a key get no view.
 * Changes are streamed with tabledata.insertAll (insertId <lsn>/<sequence>);
 * large imports are bulk-loaded (bigquery_load.h). Since the view orders by
 * (lsn, sequence), the order of arrival and replays change nothing: batches
 * go out several at a time.
 *
 * Auth: a service account's key file (bigquery_auth.h).
 *
 * Pure C++: no PostgreSQL headers.
 */
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "sinks/bigquery_auth.h"
#include "sinks/bigquery_schema.h"
#include "sinks/sink.h"

namespace pgsink
{

class BigQuerySink final : public HttpSink
{
  public:
    struct Settings {
        std::string project, dataset, location;
        std::string credentials;            /* path of the key file */
        std::string endpoint;               /* https://bigquery.googleapis.com */
        int max_rows = 500;                 /* rows per insertAll request */
        size_t max_bytes = 9 * 1024 * 1024; /* bytes per insertAll request */
        int load_min_rows = 10000;          /* import rows of a table in a batch for a load job */
        HttpOptions http;
    };
    explicit BigQuerySink(Settings settings);
    bool open(const Resume &from) override;
    std::unique_ptr<Exchange> exchange(std::string_view lines, const std::string &key) override;
    HttpOptions http_options() const override { return settings_.http; }
    void set_stream(const std::string &identity) override { stream_ = identity; }
    int default_max_in_flight() const override { return 4; }
    void close() override {}
    std::string describe() const override;
    std::string state() const override;

    /* A captured table as one Schema entry describes it (never changed once made). */
    struct Table {
        std::string ns;   /* the Schema entry's namespace */
        std::string name; /* in BigQuery, without _raw */
        std::vector<bigquery::Column> columns;
        std::vector<std::string> key; /* BigQuery names */
        std::string refused;          /* why BigQuery cannot hold it, or "" */
        uint64_t version = 0;
        uint64_t schema_lsn = 0; /* the Schema entry's */
    };

  private:
    friend class BigQueryExchange;
    std::string api(const std::string &path) const;
    std::string table_path(const std::string &table) const;

    Settings settings_;
    BigQueryAuth auth_;
    std::string stream_; /* set_stream(): in load job ids */
    bool dataset_ready_ = false;
    /* The dataset's location (BigQuery's answer), where its load jobs run. */
    std::string location_;
    const std::string &location() const
    {
        return location_.empty() ? settings_.location : location_;
    }
    uint64_t versions_ = 0;
    std::map<std::string, std::shared_ptr<const Table>> tables_; /* by namespace */
    std::map<std::string, std::set<std::string>> fields_; /* raw table -> "name TYPE [REPEATED]" */
    std::map<std::string, std::string> refused_;          /* raw table -> why */
    /* raw table -> the columns ("name TYPE") it cannot take; empty: all its changes refused */
    std::map<std::string, std::set<std::string>> refused_columns_;
};

} // namespace pgsink
