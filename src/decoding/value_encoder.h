/*
 * value_encoder.h: a column value (Datum) as JSON, by type.
 *
 * Chosen once per column when a relation's layout is (re)loaded, applied to
 * every value: integers and floats as numbers (int8, numeric and non-finite
 * floats as strings, losslessly), bool, json/jsonb embedded, arrays as JSON
 * arrays, bytea as base64, date/time types as ISO 8601, everything else as
 * the type's text output. No type can stop the stream.
 */
#pragma once

#include <memory>
#include <string>

extern "C" {
#include "postgres.h"
#include "fmgr.h"
}

namespace pgsink
{

namespace json
{
class Out;
}

enum class ValueKind : uint8 {
    int2,
    int4,
    int8,
    float4,
    float8,
    boolean,
    numeric, /* numeric_out's text, formatted in place (NaN, infinities: numeric_out) */
    text,    /* text, varchar, bpchar, xml: varlena text, escaped directly */
    name,
    json,  /* stored as valid JSON text: embedded */
    jsonb, /* jsonb_out: embedded */
    bytea,
    date,
    time,
    timestamp,
    timestamptz,
    array,
    output, /* anything else: the type's text output, as a JSON string */
};

struct ValueEncoder {
    ValueKind kind = ValueKind::output;
    Oid type = InvalidOid; /* base type: domains are encoded as what they constrain */
    FmgrInfo output;       /* the output function, for output/jsonb and fallbacks */
    /* arrays */
    Oid elem_type = InvalidOid;
    int16 elem_len = 0;
    bool elem_byval = false;
    char elem_align = 'i';
    std::unique_ptr<ValueEncoder> elem;
};

/* Prepare an encoder for values of type typid; FmgrInfo state lives in mcxt. */
void init_value_encoder(ValueEncoder &enc, Oid typid, MemoryContext mcxt);

/* Append the JSON of a non-null value. May call PostgreSQL (output functions, detoasting). */
void encode_value(json::Out &out, const ValueEncoder &enc, Datum value);

/*
 * Text output of some types (ranges and intervals of dates and times,
 * timetz, money, out-of-range years) depends on settings: fix them, so the
 * changelog depends on the data only. In the stream worker, for its whole
 * life (at_session_level); under the SQL interface, for the decoding call:
 * returns a GUC nest level to end with AtEOXact_GUC(true, level).
 */
int fix_output_settings(bool for_session);

/* The Avro type (JSON) that describes the values of this encoder. */
std::string avro_type_of(const ValueEncoder &enc);

/* Text in the server encoding (a name, a type), in UTF-8 for the changelog. */
std::string server_to_utf8(const char *s);

} // namespace pgsink
