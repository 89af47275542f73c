/*
 * selftest.cpp: pgsink._selftest_boundary(mode), which exercises the
 * C++/PostgreSQL boundary from SQL so that a regression test can prove that
 * errors cross it both ways, destructors run, and the backend stays usable.
 * Superuser only (EXECUTE is revoked from PUBLIC).
 */
#include <stdexcept>
#include <string>
#include <vector>

#include "sinks/bigquery_load.h" /* pure C++: before PostgreSQL's headers */
#include "sinks/elasticsearch_sink.h"
#include "boundary/pg_boundary.h"
#include "http/delivery_window.h"
#include "sinks/clickhouse_sink.h"
#include "sinks/webhook_sink.h"
#include "spool/spool_reader.h"
#include "spool/write_behind.h"

extern "C" {
#include "fmgr.h"
#include "utils/builtins.h"

PGDLLEXPORT Datum pgsink_selftest_boundary(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pgsink_selftest_boundary);
}

namespace pgsink
{

/* How many Witness objects were destroyed: proves unwinding ran destructors. */
static int64 destroyed_witnesses = 0;

struct Witness {
    std::vector<std::string> payload{"heap", "allocated", "state"};
    ~Witness() { destroyed_witnesses++; }
};

static int64 selftest(const std::string &mode)
{
    if (mode == "destroyed")
        return destroyed_witnesses;

    Witness witness;
    if (mode == "pg_error") {
        /* A PostgreSQL ERROR inside a guarded call becomes a C++ exception... */
        pg_call([] { return DirectFunctionCall1(int4in, CStringGetDatum("not a number")); });
    } else if (mode == "cpp_exception") {
        throw std::runtime_error("pgsink selftest: a C++ exception");
    } else if (mode == "pgsink_error") {
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "pgsink selftest: a pgsink error",
                    "This hint travels with it.");
    } else if (mode == "bad_alloc") {
        throw std::bad_alloc();
    } else if (mode == "delivery_window") {
        /* The HTTP delivery window's bookkeeping, through scripted answers. */
        std::string failures = delivery_window_selftest();
        if (!failures.empty())
            throw Error(ERRCODE_INTERNAL_ERROR, "delivery window: " + failures, "");
        return 1;
    } else if (mode == "elasticsearch") {
        /* The Elasticsearch sink's names, _ids, mappings and one scripted exchange. */
        std::string failures = elasticsearch_selftest();
        if (!failures.empty())
            throw Error(ERRCODE_INTERNAL_ERROR, "elasticsearch: " + failures, "");
        return 1;
    } else if (mode == "clickhouse") {
        /* The ClickHouse sink's encoding, scanning and naming, without a server. */
        std::string failures = clickhouse_selftest();
        if (!failures.empty())
            throw Error(ERRCODE_INTERNAL_ERROR, "clickhouse: " + failures, "");
        return 1;
    } else if (mode == "bigquery") {
        /* The BigQuery sink's direct Avro encoding against avro-c's generic values. */
        std::string failures = bigquery::bigquery_selftest();
        if (!failures.empty())
            throw Error(ERRCODE_INTERNAL_ERROR, "bigquery: " + failures, "");
        return 1;
    } else if (mode == "webhook") {
        /* The webhook's body as it is streamed, and its signature. */
        std::string failures = webhook_selftest();
        if (!failures.empty())
            throw Error(ERRCODE_INTERNAL_ERROR, "webhook: " + failures, "");
        return 1;
    } else if (mode == "count_newlines") {
        /*
         * The spool reader's vectorized newline count against a byte loop:
         * every length up to 9,000 (past 255 rounds of 16 bytes, where its
         * byte counters are summed) at every alignment mod 16, from all
         * newlines to none.
         */
        std::string buf(9000 + 16, 'x');
        uint64_t seed = 1;
        for (int density : {1, 2, 7, 300, 0}) {
            for (char &c : buf) {
                seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
                c = density != 0 && (seed >> 33) % density == 0 ? '\n'
                                                                : static_cast<char>(seed >> 56);
                if (c == '\n' && density == 0)
                    c = 'y';
            }
            for (size_t len = 0; len <= 9000; len += len < 600 ? 1 : 37)
                for (size_t at = 0; at < 16; at++) {
                    uint64_t want = 0;
                    for (size_t i = 0; i < len; i++)
                        want += buf[at + i] == '\n';
                    if (spool::count_newlines(buf.data() + at, len) != want)
                        throw Error(ERRCODE_INTERNAL_ERROR,
                                    "count_newlines: wrong count for " + std::to_string(len) +
                                        " bytes at " + std::to_string(at) + ", density " +
                                        std::to_string(density),
                                    "");
                }
        }
        return 1;
    } else if (mode == "write_behind") {
        /*
         * The spool's write thread held (a round's fsync) while 3 MB buffers
         * are submitted: what is queued stays within 20 MB, not 64 buffers;
         * and the buffers kept for reuse hold at most 40 MB.
         */
        size_t kept = 0;
        size_t queued = spool::write_behind_queued_while_stalled(&kept);
        if (queued * 3 > 20)
            throw Error(ERRCODE_INTERNAL_ERROR,
                        "write_behind: " + std::to_string(queued) +
                            " buffers of 3 MB queued behind a stalled write thread",
                        "");
        if (kept > 40 << 20)
            throw Error(ERRCODE_INTERNAL_ERROR,
                        "write_behind: " + std::to_string(kept >> 20) +
                            " MB of buffers kept for reuse after 60 of 3 MB",
                        "");
        return 1;
    } else if (mode == "ok") {
        return pg_call(
            [] { return DatumGetInt32(DirectFunctionCall1(int4in, CStringGetDatum("42"))); });
    }
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "unknown selftest mode \"" + mode + "\"",
                "Use ok, pg_error, cpp_exception, pgsink_error, bad_alloc, delivery_window, "
                "elasticsearch, clickhouse, bigquery, webhook, count_newlines, write_behind or "
                "destroyed.");
}

} // namespace pgsink

Datum pgsink_selftest_boundary(PG_FUNCTION_ARGS)
{
    char *mode = text_to_cstring(PG_GETARG_TEXT_PP(0));
    int64 result = pgsink::cxx_entry([&] { return pgsink::selftest(mode); });
    PG_RETURN_INT64(result);
}
