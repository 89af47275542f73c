/*
 * value_encoder.cpp: JSON encoding of PostgreSQL values.
 *
 * Runs inside output plugin callbacks, per value: no allocation of its own
 * beyond the output string; PostgreSQL memory it causes (detoasting, output
 * functions) is released when the caller resets the per-change context.
 * Frames here hold no C++ object with a destructor, so an ERROR raised by an
 * output function unwinds through them safely.
 */
#include <algorithm>
#include <cmath>

#include "changelog/json_writer.h"
#include "decoding/value_encoder.h"

extern "C" {
#include "access/detoast.h"
#include "catalog/pg_type.h"
#include "common/shortest_dec.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/date.h"
#include "utils/lsyscache.h"
#include "utils/guc.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/timestamp.h"
}

namespace pgsink
{

static ValueKind kind_of(Oid typid)
{
    switch (typid) {
    case INT2OID:
        return ValueKind::int2;
    case INT4OID:
        return ValueKind::int4;
    case INT8OID:
        return ValueKind::int8;
    case FLOAT4OID:
        return ValueKind::float4;
    case FLOAT8OID:
        return ValueKind::float8;
    case NUMERICOID:
        return ValueKind::numeric;
    case BOOLOID:
        return ValueKind::boolean;
    case TEXTOID:
    case VARCHAROID:
    case BPCHAROID:
    case XMLOID:
        return ValueKind::text;
    case NAMEOID:
        return ValueKind::name;
    case JSONOID:
        return ValueKind::json;
    case JSONBOID:
        return ValueKind::jsonb;
    case BYTEAOID:
        return ValueKind::bytea;
    case DATEOID:
        return ValueKind::date;
    case TIMEOID:
        return ValueKind::time;
    case TIMESTAMPOID:
        return ValueKind::timestamp;
    case TIMESTAMPTZOID:
        return ValueKind::timestamptz;
    default:
        return ValueKind::output;
    }
}

void init_value_encoder(ValueEncoder &enc, Oid typid, MemoryContext mcxt)
{
    Oid base = getBaseType(typid);
    enc.type = base;
    enc.kind = kind_of(base);

    Oid outfunc;
    bool varlena;
    getTypeOutputInfo(base, &outfunc, &varlena);
    fmgr_info_cxt(outfunc, &enc.output, mcxt);

    Oid elem = get_element_type(base);
    if (enc.kind == ValueKind::output && OidIsValid(elem)) {
        enc.kind = ValueKind::array;
        enc.elem_type = elem;
        get_typlenbyvalalign(elem, &enc.elem_len, &enc.elem_byval, &enc.elem_align);
        enc.elem = std::make_unique<ValueEncoder>();
        init_value_encoder(*enc.elem, elem, mcxt);
    }
}

/*
 * The bytes of a varlena value without copying them when possible. Logical
 * decoding hands over reassembled TOAST values as indirect pointers, which
 * PostgreSQL's detoasting would copy: for a 500 MB value that copy alone is
 * 500 MB more of memory. Compressed or on-disk values are still detoasted.
 */
static const struct varlena *borrow_varlena(Datum value)
{
    struct varlena *v = reinterpret_cast<struct varlena *>(DatumGetPointer(value));
    if (VARATT_IS_EXTERNAL_INDIRECT(v)) {
        struct varatt_indirect redirect;
        VARATT_EXTERNAL_GET_POINTER(redirect, v);
        v = redirect.pointer;
    }
    if (VARATT_IS_EXTERNAL(v) || VARATT_IS_COMPRESSED(v))
        v = pg_detoast_datum_packed(v);
    return v;
}

/* Text in the server encoding, as a JSON string in UTF-8. */
static void append_server_text(json::Out &out, const char *s, size_t len)
{
    if (GetDatabaseEncoding() == PG_UTF8 || GetDatabaseEncoding() == PG_SQL_ASCII) {
        json::append_string(out, s, len);
        return;
    }
    /*
     * Unconverted (an empty value, for one), the input comes back as it is:
     * varlena bytes without a terminating NUL, so its length is len, never
     * what strlen() would find.
     */
    char *utf8 = pg_server_to_any(s, static_cast<int>(len), PG_UTF8);
    json::append_string(out, utf8, utf8 == s ? len : strlen(utf8));
}

/*
 * A json value embedded as it is, in UTF-8, on one line: json keeps its
 * input text, newlines included, and every entry must be exactly one line.
 * PostgreSQL only accepts json whose strings have their control characters
 * escaped, so a raw CR or LF can only be whitespace between tokens: a space
 * says the same.
 */
static void append_embedded_json(json::Out &out, const char *s, size_t len)
{
    if (GetDatabaseEncoding() != PG_UTF8 && GetDatabaseEncoding() != PG_SQL_ASCII) {
        const char *utf8 = pg_server_to_any(s, static_cast<int>(len), PG_UTF8);
        if (utf8 != s) /* else unconverted, not NUL-terminated: len stands */
            len = strlen(utf8);
        s = utf8;
    }
    if (len > json::Out::kBigValue)
        out.expect(len);
    const char *end = s + len;
    while (s < end) {
        const char *line_end = s;
        while (line_end < end && *line_end != '\n' && *line_end != '\r')
            line_end++;
        out.append(s, line_end - s);
        if (line_end == end)
            break;
        out.put(' ');
        s = line_end + 1;
    }
}

std::string server_to_utf8(const char *s)
{
    int encoding = GetDatabaseEncoding();
    if (encoding == PG_UTF8 || encoding == PG_SQL_ASCII)
        return s;
    return pg_server_to_any(s, static_cast<int>(strlen(s)), PG_UTF8);
}

static void append_output(json::Out &out, const ValueEncoder &enc, Datum value)
{
    char *text = OutputFunctionCall(const_cast<FmgrInfo *>(&enc.output), value);
    append_server_text(out, text, strlen(text));
}

static void append_float(json::Out &out, double v, bool single)
{
    if (std::isnan(v) || std::isinf(v)) {
        /* Not representable in JSON: PostgreSQL's own spelling, as a string. */
        if (std::isnan(v))
            out.literal("\"NaN\"");
        else if (v > 0)
            out.literal("\"Infinity\"");
        else
            out.literal("\"-Infinity\"");
        return;
    }
    /* The shortest text that reads back exactly, as float4out/float8out write it. */
    static_assert(DOUBLE_SHORTEST_DECIMAL_LEN <= json::Out::kMaxReserve);
    char *p = out.reserve(DOUBLE_SHORTEST_DECIMAL_LEN);
    int n = single ? float_to_shortest_decimal_buf(static_cast<float>(v), p)
                   : double_to_shortest_decimal_buf(v, p);
    out.commit(p + n);
}

/*
 * numeric's on-disk form (utils/adt/numeric.c; pg_upgrade keeps values as
 * they are, so it does not change between major versions): a 16-bit header,
 * in the long form a 16-bit weight, then base-10000 digits.
 */
constexpr uint16 kNumericSignMask = 0xC000;
constexpr uint16 kNumericNeg = 0x4000;
constexpr uint16 kNumericShort = 0x8000;
constexpr uint16 kNumericSpecial = 0xC000; /* NaN, Infinity, -Infinity */
constexpr uint16 kNumericShortSign = 0x2000;
constexpr uint16 kNumericShortDscaleMask = 0x1F80;
constexpr int kNumericShortDscaleShift = 7;
constexpr uint16 kNumericShortWeightSign = 0x0040;
constexpr uint16 kNumericShortWeightMask = 0x003F;
constexpr uint16 kNumericDscaleMask = 0x3FFF;
constexpr int kDecDigits = 4; /* decimal digits per base-10000 digit */

struct NumericParts {
    bool negative;
    int weight; /* of the first digit, in base-10000 places */
    int dscale; /* decimal digits after the point */
    int ndigits;
    const char *digits; /* int16s, maybe unaligned */

    int digit(int i) const
    {
        if (i < 0 || i >= ndigits)
            return 0;
        int16 d;
        memcpy(&d, digits + i * sizeof(int16), sizeof(d));
        return d;
    }
};

/* Read a finite numeric in place; false for NaN and the infinities. */
static bool numeric_parts(const struct varlena *v, NumericParts *n)
{
    const char *p = VARDATA_ANY(v);
    size_t size = VARSIZE_ANY_EXHDR(v);
    uint16 header;
    memcpy(&header, p, sizeof(header));
    if ((header & kNumericSignMask) == kNumericSpecial)
        return false;
    if (header & kNumericShort) {
        n->negative = (header & kNumericShortSign) != 0;
        n->dscale = (header & kNumericShortDscaleMask) >> kNumericShortDscaleShift;
        n->weight = ((header & kNumericShortWeightSign) ? ~kNumericShortWeightMask : 0) |
                    (header & kNumericShortWeightMask);
        n->digits = p + sizeof(uint16);
    } else {
        n->negative = (header & kNumericSignMask) == kNumericNeg;
        n->dscale = header & kNumericDscaleMask;
        int16 weight;
        memcpy(&weight, p + sizeof(uint16), sizeof(weight));
        n->weight = weight;
        n->digits = p + 2 * sizeof(uint16);
    }
    n->ndigits = static_cast<int>((size - (n->digits - p)) / sizeof(int16));
    return true;
}

static char *put_digit4(char *p, int dig)
{
    p[0] = static_cast<char>('0' + dig / 1000);
    p[1] = static_cast<char>('0' + dig / 100 % 10);
    p[2] = static_cast<char>('0' + dig / 10 % 10);
    p[3] = static_cast<char>('0' + dig % 10);
    return p + 4;
}

/* The first digit without its leading zeros (at least one digit). */
static char *put_first_digit(char *p, int dig)
{
    char four[kDecDigits];
    put_digit4(four, dig);
    int skip = dig >= 1000 ? 0 : dig >= 100 ? 1 : dig >= 10 ? 2 : 3;
    memcpy(p, four + skip, kDecDigits - skip);
    return p + kDecDigits - skip;
}

/*
 * numeric_out's text as a JSON string, written the way its
 * get_str_from_var() writes it, without numeric_out's two copies (the
 * detoasted value, the palloc'd text). False (nothing written) for NaN, the
 * infinities and numbers too long for one reserve(): numeric_out then.
 */
static bool append_numeric(json::Out &out, Datum value)
{
    NumericParts n;
    if (!numeric_parts(borrow_varlena(value), &n))
        return false;
    int int_digits = std::max((n.weight + 1) * kDecDigits, 1);
    /* Quotes, sign, point, and up to kDecDigits - 1 digits written past dscale. */
    size_t longest = static_cast<size_t>(int_digits) + n.dscale + kDecDigits + 4;
    if (longest > json::Out::kMaxReserve)
        return false;
    char *p = out.reserve(longest);
    *p++ = '"';
    if (n.negative)
        *p++ = '-';
    int d;
    if (n.weight < 0) {
        d = n.weight + 1;
        *p++ = '0';
    } else {
        p = put_first_digit(p, n.digit(0));
        for (d = 1; d <= n.weight; d++)
            p = put_digit4(p, n.digit(d));
    }
    if (n.dscale > 0) {
        *p++ = '.';
        char *end = p + n.dscale;
        for (int i = 0; i < n.dscale; d++, i += kDecDigits)
            p = put_digit4(p, n.digit(d));
        p = end;
    }
    *p++ = '"';
    out.commit(p);
    return true;
}

/*
 * A date/time outside years 1..9999 as to_json() writes it (ISO 8601 with
 * PostgreSQL's BC suffix and its five-digit years), in UTC for timestamptz.
 */
static void append_json_datetime(json::Out &out, Datum value, Oid typid)
{
    char buf[MAXDATELEN + 1];
    int utc = 0;
    JsonEncodeDateTime(buf, value, typid, typid == TIMESTAMPTZOID ? &utc : nullptr);
    json::append_string(out, buf, strlen(buf));
}

static void append_date(json::Out &out, Datum value)
{
    DateADT d = DatumGetDateADT(value);
    if (DATE_NOT_FINITE(d)) {
        if (DATE_IS_NOBEGIN(d))
            out.literal("\"-infinity\"");
        else
            out.literal("\"infinity\"");
        return;
    }
    char *end = json::format_date(out.reserve(json::kMaxDateTimeLen), d);
    if (end)
        out.commit(end);
    else
        append_json_datetime(out, value, DATEOID);
}

static void append_timestamp(json::Out &out, const ValueEncoder &enc, Datum value)
{
    Timestamp ts = DatumGetTimestamp(value);
    if (TIMESTAMP_NOT_FINITE(ts)) {
        if (TIMESTAMP_IS_NOBEGIN(ts))
            out.literal("\"-infinity\"");
        else
            out.literal("\"infinity\"");
        return;
    }
    char *end = json::format_timestamp(out.reserve(json::kMaxDateTimeLen), ts,
                                       enc.kind == ValueKind::timestamptz, false);
    if (end)
        out.commit(end);
    else
        append_json_datetime(out, value, enc.type);
}

/* Nested JSON arrays for the dimensions of an array, from element index *pos on. */
static void append_array_dim(json::Out &out, const ValueEncoder &enc, int dim, int ndim,
                             const int *dims, Datum *elems, bool *nulls, int *pos)
{
    out.put('[');
    for (int i = 0; i < dims[dim]; i++) {
        if (i)
            out.put(',');
        if (dim + 1 < ndim) {
            append_array_dim(out, enc, dim + 1, ndim, dims, elems, nulls, pos);
        } else {
            if (nulls[*pos])
                out.literal("null");
            else
                encode_value(out, *enc.elem, elems[*pos]);
            (*pos)++;
        }
    }
    out.put(']');
}

static void append_array(json::Out &out, const ValueEncoder &enc, Datum value)
{
    ArrayType *arr = DatumGetArrayTypeP(value);
    int ndim = ARR_NDIM(arr);
    if (ndim == 0) {
        out.literal("[]");
        return;
    }
    Datum *elems;
    bool *nulls;
    int nelems;
    deconstruct_array(arr, enc.elem_type, enc.elem_len, enc.elem_byval, enc.elem_align, &elems,
                      &nulls, &nelems);
    int pos = 0;
    append_array_dim(out, enc, 0, ndim, ARR_DIMS(arr), elems, nulls, &pos);
}

void encode_value(json::Out &out, const ValueEncoder &enc, Datum value)
{
    switch (enc.kind) {
    case ValueKind::int2:
        json::append_int(out, DatumGetInt16(value));
        return;
    case ValueKind::int4:
        json::append_int(out, DatumGetInt32(value));
        return;
    case ValueKind::int8:
        json::append_int_as_string(out, DatumGetInt64(value));
        return;
    case ValueKind::float4:
        append_float(out, DatumGetFloat4(value), true);
        return;
    case ValueKind::float8:
        append_float(out, DatumGetFloat8(value), false);
        return;
    case ValueKind::numeric:
        if (!append_numeric(out, value))
            append_output(out, enc, value);
        return;
    case ValueKind::boolean:
        if (DatumGetBool(value))
            out.literal("true");
        else
            out.literal("false");
        return;
    case ValueKind::text: {
        const struct varlena *v = borrow_varlena(value);
        append_server_text(out, VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
        return;
    }
    case ValueKind::name: {
        const char *s = NameStr(*DatumGetName(value));
        append_server_text(out, s, strlen(s));
        return;
    }
    case ValueKind::json: {
        const struct varlena *v = borrow_varlena(value);
        append_embedded_json(out, VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
        return;
    }
    case ValueKind::jsonb: {
        const char *text = OutputFunctionCall(const_cast<FmgrInfo *>(&enc.output), value);
        append_embedded_json(out, text, strlen(text));
        return;
    }
    case ValueKind::bytea: {
        const struct varlena *v = borrow_varlena(value);
        json::append_base64(out, reinterpret_cast<const unsigned char *>(VARDATA_ANY(v)),
                            VARSIZE_ANY_EXHDR(v));
        return;
    }
    case ValueKind::date:
        append_date(out, value);
        return;
    case ValueKind::time:
        out.commit(
            json::format_time_of_day(out.reserve(json::kMaxDateTimeLen), DatumGetTimeADT(value)));
        return;
    case ValueKind::timestamp:
    case ValueKind::timestamptz:
        append_timestamp(out, enc, value);
        return;
    case ValueKind::array:
        append_array(out, enc, value);
        return;
    case ValueKind::output:
        append_output(out, enc, value);
        return;
    }
}

int fix_output_settings(bool for_session)
{
    static const char *const settings[][2] = {
        {"TimeZone", "UTC"},         {"DateStyle", "ISO, YMD"}, {"IntervalStyle", "postgres"},
        {"extra_float_digits", "1"}, {"lc_monetary", "C"},
    };
    int level = for_session ? 0 : NewGUCNestLevel();
    for (const auto &kv : settings) {
        if (for_session)
            SetConfigOption(kv[0], kv[1], PGC_SUSET, PGC_S_OVERRIDE);
        else
            (void)set_config_option(kv[0], kv[1], PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE, true,
                                    0, false);
    }
    return level;
}

/*
 * The Avro type(s) of the JSON a column's values are written as: the schema
 * says exactly what a reader finds. Several types (a value that is a number
 * or, when not finite, a string) are listed for the union the field's type
 * is built into. int8 and numeric are strings (exact beyond 2^53), bytea is
 * base64 text; json and jsonb are embedded JSON, marked "pg_json":"embedded"
 * (see README, "The changelog").
 */
std::string avro_type_of(const ValueEncoder &enc)
{
    switch (enc.kind) {
    case ValueKind::int2:
    case ValueKind::int4:
        return "\"int\"";
    case ValueKind::float4:
        return "\"float\",\"string\""; /* "NaN", "Infinity", "-Infinity" */
    case ValueKind::float8:
        return "\"double\",\"string\"";
    case ValueKind::boolean:
        return "\"boolean\"";
    case ValueKind::array:
        return "{\"type\":\"array\",\"items\":[" + avro_type_of(*enc.elem) + ",\"null\"]}";
    case ValueKind::json:
    case ValueKind::jsonb:
        /*
         * Embedded JSON of any shape: Avro has no type for it (a recursive
         * union needs a named record, which JSON values are not). The type
         * says so instead of naming a shape it does not have.
         */
        return "{\"type\":\"string\",\"pg_json\":\"embedded\"}";
    default:
        return "\"string\""; /* int8, numeric, bytea (base64), text forms */
    }
}

} // namespace pgsink
