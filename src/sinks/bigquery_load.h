/*
 * bigquery_load.h: load jobs of the BigQuery sink. Import rows of a table,
 * many of them in one batch, are not streamed (insertAll costs, load jobs
 * do not): they are written as an Avro object container file and uploaded
 * with jobs.insert (uploadType=multipart, sourceFormat AVRO,
 * useAvroLogicalTypes, WRITE_APPEND to the raw table), then polled until
 * DONE before the batch counts as delivered. The Avro binary encoding is
 * written here straight from the changelog's text; avro-c parses the schema
 * of every file, and its generic values are the reference encoder the
 * selftest holds this one to (avro_file_reference).
 *
 * The job id is pgsink's: derived from the batch's place in the spool and
 * the rows, so the same load sent again after a crash is refused by
 * BigQuery as a duplicate (409) instead of loading the rows twice; the
 * existing job, once DONE without error, counts as the load.
 *
 * Avro types (logical types, as BigQuery reads them with useAvroLogicalTypes):
 *   INT64 long; FLOAT64 double; BOOL boolean; BYTES bytes; STRING string;
 *   NUMERIC / BIGNUMERIC bytes decimal(38,9) / decimal(76,38);
 *   DATE int date; TIME long time-micros; TIMESTAMP long timestamp-micros;
 *   DATETIME string with sqlType DATETIME; JSON string with sqlType JSON;
 *   REPEATED an array of those; every field a union with null (but REQUIRED
 *   helper columns).
 *
 * Pure C++: no PostgreSQL headers.
 */
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sinks/bigquery_schema.h"

namespace pgsink::bigquery
{

/* The Avro writer schema (JSON) of a raw table with these columns (and the helper columns). */
std::string avro_schema(const std::vector<Column> &columns);

/*
 * The rows as an Avro object container file; throws Refusal (its message
 * names the row's entry) when a value cannot be written.
 */
std::string avro_file(const std::vector<Column> &columns, const std::vector<Row> &rows);

/*
 * An import row as the changelog has it: its columns' raw JSON texts by the
 * columns' place (a view without data: not in the row), and its helper values.
 */
struct RawChange {
    size_t entry = 0;
    std::vector<std::string_view> values;
    int64_t lsn = 0, sequence = 0;
    std::string_view op, timestamp, xid; /* xid empty: NULL */
};
/* The same, straight from the changelog's values (converted as insert_value() does). */
std::string avro_file(const std::vector<Column> &columns, const std::vector<RawChange> &changes);

/*
 * That file written a change at a time (each encoded while its line is still
 * in the cache, and no vector of them): exactly rows changes added, then
 * finish(). add() throws Refusal (its message names the change's entry).
 */
class AvroFile
{
  public:
    /* room: bytes left before the file (for what a request puts before it; see multipart_body). */
    AvroFile(const std::vector<Column> &columns, size_t rows, size_t room = 0);
    ~AvroFile();
    AvroFile(const AvroFile &) = delete;
    AvroFile &operator=(const AvroFile &) = delete;
    void add(const RawChange &change);
    std::string finish();

  private:
    struct State;
    std::unique_ptr<State> s_;
    friend std::string avro_file(const std::vector<Column> &, const std::vector<Row> &);
};

/*
 * The same files made by avro-c's generic values (avro_value_set_* per field,
 * avro_value_write per row), the encoder avro_file() replaced: the reference
 * the selftest holds avro_file() to, byte for byte. Slower, not for loads.
 */
std::string avro_file_reference(const std::vector<Column> &columns, const std::vector<Row> &rows);
std::string avro_file_reference(const std::vector<Column> &columns,
                                const std::vector<RawChange> &changes);

/* The selftest (bigquery_selftest.cpp): avro_file() against the reference; "" if they agree. */
std::string bigquery_selftest();

/* The multipart/related body of jobs.insert: the job's JSON, then data. Sets *boundary. */
std::string multipart_body(const std::string &job_json, const std::string &data,
                           std::string *boundary);
/*
 * The same from file, whose data starts at byte at (an AvroFile's room): the
 * file itself becomes the body when what goes before the data fits there (no
 * copy of a file of megabytes).
 */
std::string multipart_body(const std::string &job_json, std::string &&file, size_t at,
                           std::string *boundary);

} // namespace pgsink::bigquery
