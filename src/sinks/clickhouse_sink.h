/*
 * clickhouse_sink.h: captured tables mirrored into ClickHouse over HTTP
 * (pgsink.sink = 'clickhouse').
 *
 * Each captured table <schema>.<table> becomes a ReplacingMergeTree table
 * <schema>_<table> in pgsink.clickhouse_database, versioned by the commit
 * LSN and ordered by the key columns, with the row's columns (types: see
 * clickhouse_schema.h) and _pgsink_lsn, _pgsink_sequence, _pgsink_op,
 * _pgsink_deleted (1 for deletes, which keep the key) and
 * _pgsink_timestamp; and a view <schema>_<table>_current of the current
 * rows (FINAL, not deleted). Rows of one batch go in one INSERT per table,
 * in commit order, so that of changes to one key sharing an LSN the last
 * wins (ReplacingMergeTree keeps the last inserted of equal versions; one
 * batch in flight). An update that left a TOASTed column unchanged takes
 * the value from an earlier change of the batch or from the table itself
 * (its key and unchanged columns read with FINAL before the inserts).
 * TRUNCATE deletes the rows before it by (lsn, sequence) with a mutation,
 * and its position is kept in the table _pgsink_truncates of the database
 * (no captured table gets that name: see clickhouse_table_name()), so that
 * a change from before it that comes later (pgsink.retry_dead_letters(), a
 * rewind, a replay) is left out instead of bringing a truncated row back;
 * the view hides rows before it too (those written before this was so).
 * Parked entries sent again (pgsink.retry_dead_letters()) come out of
 * their order: a row older by (lsn, sequence) than what the table holds for
 * its key is left out (exchange_resent()), since ClickHouse would keep the
 * last inserted of equal LSNs.
 * A column named like a helper column is renamed (clickhouse::column_name()).
 *
 * Entries are read once as raw text and rows written straight into the
 * INSERT's body (clickhouse_rows.h): no value is parsed into an object. The
 * common batch (one table's changes, nothing to read back, no TRUNCATE or
 * schema change) is one INSERT streamed as its rows are made, so that
 * ClickHouse parses while the sink encodes.
 *
 * Pure C++: no PostgreSQL headers.
 */
#pragma once

#include <map>
#include <string>
#include <vector>

#include "sinks/clickhouse_rows.h"
#include "sinks/clickhouse_schema.h"
#include "sinks/sink.h"

namespace pgsink
{

class ClickHouseSink final : public HttpSink
{
  public:
    struct Settings {
        std::string url;      /* http(s)://host:port[/path][?settings] */
        std::string database; /* created if missing */
        std::string user, password;
        HttpOptions http;
    };
    explicit ClickHouseSink(Settings settings);
    bool open(const Resume &from) override;
    std::unique_ptr<Exchange> exchange(std::string_view lines, const std::string &key) override;
    /*
     * Parked entries sent again: ClickHouse keeps the last inserted of rows
     * with equal versions (_pgsink_lsn, shared by a transaction's changes),
     * and a merge drops the others for good, so an older change of a key
     * must not be inserted after a newer one of the same transaction. The
     * exchange first reads each key's greatest (_pgsink_lsn,
     * _pgsink_sequence) and leaves out the rows older than it.
     */
    std::unique_ptr<Exchange> exchange_resent(std::string_view lines,
                                              const std::string &key) override;
    HttpOptions http_options() const override { return settings_.http; }
    /*
     * One batch at a time: the rows of a key sharing an LSN must arrive in
     * order, and a batch's reads of current rows must see the batch before.
     */
    int max_in_flight_limit() const override { return 1; }
    void close() override {}
    std::string describe() const override;
    std::string state() const override;

    /*
     * Answers to reads of current rows (TOAST carry-over) are kept up to
     * lookup_answer bytes; a bigger one is read again in halves, down to
     * one key, whose row may take up to lookup_row_answer (else its updates
     * are parked, saying why). Smaller in the selftest.
     */
    struct Limits {
        size_t lookup_answer = static_cast<size_t>(64) << 20;
        size_t lookup_row_answer = static_cast<size_t>(1) << 30;
    };
    void set_limits(Limits limits) { limits_ = limits; }

    /* What the sink knows of a captured table. */
    struct Table {
        std::string name; /* in ClickHouse */
        std::vector<clickhouse::Column> columns;
        std::vector<std::string> key;
        std::string signature; /* the Schema entry's fields and key, to see a change */
        std::string refused;   /* why its changes cannot be written (a changed key), or "" */
        bool created = true;   /* false: ClickHouse lost it (dropped): made again first */
        /*
         * Its latest TRUNCATE (or resync_end: a TRUNCATE at resync_since),
         * kept in ClickHouse (<database>._pgsink_truncates) and read back
         * when the table is installed: a change before it that arrives later
         * (a retried dead letter, a rewind) is left out, not written.
         */
        uint64_t truncated_lsn = 0, truncated_seq = 0;
    };

    /* An answer's text without our secrets (the password, the URL's credentials). */
    std::string scrub(std::string text) const;

  private:
    friend class ClickHouseExchange;
    HttpRequest query(std::string sql) const;

    Settings settings_;
    std::string request_url_; /* clickhouse_request_url() of settings_.url */
    Limits limits_;
    bool database_ready_ = false;
    clickhouse::Server server_; /* its version, asked once per open() */
    bool server_known_ = false;
    std::map<std::string, Table> tables_; /* by namespace "schema.table" */
    /* The last exchange's scanned entries and rows, for their memory. */
    std::vector<clickhouse::Entry> spare_entries_;
    std::vector<clickhouse::Member> spare_rows_;
};

/*
 * The URL requests go to: pgsink.clickhouse_url, with "/" for an empty
 * path. A path is kept (a proxy), a query string too (settings), but for a
 * query parameter; throws a SinkError saying what is wrong.
 */
std::string clickhouse_request_url(const std::string &url);

/* Checks of the sink's pure parts (clickhouse_selftest.cpp); "" if all hold. */
std::string clickhouse_selftest();

/* The ClickHouse table name of <schema>.<table>. */
std::string clickhouse_table_name(const std::string &schema, const std::string &table);

} // namespace pgsink
