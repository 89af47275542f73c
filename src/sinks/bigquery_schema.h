/*
 * bigquery_schema.h: how a captured table looks in BigQuery (the BigQuery
 * sink, issue 13).
 *
 * Every column gets the BigQuery type that holds every value PostgreSQL can
 * send for it, exactly:
 *   smallint, integer, bigint, oid   INT64
 *   real, double precision           FLOAT64 (NaN, Infinity as BigQuery's strings)
 *   numeric(p,s), s<=9, p-s<=29      NUMERIC
 *   numeric(p,s), s<=38, p-s<=38     BIGNUMERIC
 *   numeric (no typmod), others      STRING (no BigQuery number holds them all)
 *   boolean                          BOOL
 *   bytea                            BYTES
 *   date                             DATE
 *   time                             TIME
 *   timestamp                        DATETIME
 *   timestamptz                      TIMESTAMP
 *   json, jsonb                      JSON
 *   arrays of the above              REPEATED of the element's type
 *   everything else                  STRING: the changelog's text (uuid, inet,
 *                                    interval, timetz, ranges, enums, money...)
 * Values a type cannot hold are not bent: 'infinity' dates and timestamps
 * become BigQuery's largest (and '-infinity' its smallest) value, as other
 * tools do; years before 1 or after 9999, a TIME of 24:00:00, a NaN numeric,
 * an array with NULL elements or several dimensions are refused, with the
 * reason, and parked as dead letters. A NULL array reads as an empty one.
 *
 * BigQuery names: a column is named as in the Schema entry (its Avro name:
 * letters, digits, underscores); names BigQuery reserves, names equal
 * without regard to case, and names starting with _pgsink_ refuse the table.
 *
 * Pure C++: no PostgreSQL headers.
 */
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace pgsink::bigquery
{

enum class Kind {
    int64,
    float64,
    numeric,
    bignumeric,
    boolean,
    bytes,
    date,
    time,
    datetime,
    timestamp,
    json,
    string
};

struct Column {
    std::string name;    /* in BigQuery (the Schema entry's Avro name) */
    std::string pg_name; /* in the changelog's rows */
    std::string pg_type; /* as the Schema entry says, e.g. "numeric(12,2)" */
    Kind kind = Kind::string;
    bool repeated = false;
    bool key = false;
};

/* A value a column cannot hold: the entry is refused with this reason. */
class Refusal : public std::runtime_error
{
  public:
    using std::runtime_error::runtime_error;
};

Column column_for(const std::string &name, const std::string &pg_name, const std::string &pg_type,
                  bool key);
/* The BigQuery type name: INT64, NUMERIC... */
const char *type_name(Kind kind);
/* The TableFieldSchema of c, as JSON text. */
std::string field_json(const Column &c);
/* The helper columns every raw table has, as TableFieldSchema JSON texts, and their names. */
std::vector<std::string> helper_fields_json();
const std::vector<std::string> &helper_names();
/* Why BigQuery would refuse this column name ("" if it takes it). */
std::string name_problem(const std::string &name);

/*
 * A changelog value (its raw JSON text) as insertAll's JSON value for c,
 * as JSON text; throws Refusal when c cannot hold it.
 */
std::string insert_value(const Column &c, const std::string &raw);

/* A name quoted for standard SQL: `name`. */
std::string quote(const std::string &name);

/*
 * The view's query (standard SQL) over the raw table `ref` (project.dataset.table)
 * of a table with these columns and key (BigQuery names, non-empty).
 */
std::string view_query(const std::string &ref, const std::vector<Column> &columns,
                       const std::vector<std::string> &key);

/* A row of a raw table: its fields' values as insertAll JSON texts. */
struct Row {
    size_t entry;          /* the batch's entry it comes from */
    std::string insert_id; /* <lsn>/<sequence> (the old key of a key change: .../old) */
    std::vector<std::pair<std::string, std::string>> values; /* field name, JSON text */
};
/* The row as insertAll's {"insertId":...,"json":{...}}. */
std::string insert_all_row(const Row &row);

/* The BigQuery name of <schema>.<table> (Avro names), without the _raw suffix. */
std::string table_name(const std::string &schema, const std::string &table);

} // namespace pgsink::bigquery
