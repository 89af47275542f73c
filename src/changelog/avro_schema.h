/*
 * avro_schema.h: the Avro record schema of a captured relation, built as
 * JSON and validated with avro-c before it is ever emitted.
 */
#pragma once

#include <string>
#include <vector>

namespace pgsink
{

struct ColumnSchema {
    std::string name;      /* PostgreSQL column name, as it appears in "after"/"before" */
    std::string pg_type;   /* format_type() of the column, e.g. "character varying(20)" */
    std::string avro_type; /* a JSON Avro type: "\"long\"", or an array type object */
};

struct RelationSchema {
    std::string nspname;
    std::string relname;
    std::vector<ColumnSchema> columns;
    std::vector<std::string> key; /* key columns, in key order; empty with REPLICA IDENTITY FULL */
};

/*
 * The schema entry's "schema" object:
 *   {"namespace":"public.example","type":"record","name":"value",
 *    "fields":[{"name":"id","type":["long","null"],"default":null,"pg_type":"bigint"},...],
 *    "key":["id"]}
 * Avro field names must match [A-Za-z_][A-Za-z0-9_]*: other column names are
 * sanitised for "name" and kept verbatim in "pg_name". Throws
 * std::runtime_error with avro-c's message if the result is not valid Avro.
 */
std::string build_avro_schema(const RelationSchema &rel);

/* An Avro name made from a PostgreSQL identifier. */
std::string avro_name(const std::string &identifier);

} // namespace pgsink
