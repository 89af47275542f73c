/*
 * pause.cpp: pgsink.pause(sink) and pgsink.resume(sink): decoding (sink
 * NULL) or one sink's delivery stops where it is and goes on later, without
 * restarting anything; the spool (for a sink) or the slot (for decoding)
 * keeps what is not delivered meanwhile. See core/pause.h.
 */
#include "boundary/pg_boundary.h"
#include "core/config.h"
#include "core/pause.h"

extern "C" {
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"

PGDLLEXPORT Datum pgsink_pause(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum pgsink_resume(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pgsink_pause);
PG_FUNCTION_INFO_V1(pgsink_resume);
}

namespace pgsink
{

/* The sink argument, case-folded as pgsink.sink is, and checked to be configured; NULL: decoding.
 */
static const char *sink_arg(FunctionCallInfo fcinfo, bool pause)
{
    if (PG_ARGISNULL(0))
        return nullptr;
    char *sink = text_to_cstring(PG_GETARG_TEXT_PP(0));
    for (char *c = sink; *c; c++)
        *c = static_cast<char>(pg_tolower(static_cast<unsigned char>(*c)));
    /* A sink paused, then removed from pgsink.sink, can still be resumed. */
    if (!sink_configured(sink) && (pause || sink_paused_since(sink) == 0))
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT),
                        errmsg("sink \"%s\" is not in pgsink.sink", sink),
                        errhint("SELECT sink FROM pgsink.sinks lists the configured sinks; "
                                "pgsink.pause() without a sink pauses decoding.")));
    return sink;
}

static Datum pause_or_resume(FunctionCallInfo fcinfo, bool pause)
{
    const char *sink = sink_arg(fcinfo, pause);
    bool changed = cxx_entry([&] { return set_paused(sink, pause); });
    if (changed) {
        char what[NAMEDATALEN + 32];
        if (sink)
            snprintf(what, sizeof(what), "delivery of sink \"%s\"", sink);
        else
            strlcpy(what, "decoding", sizeof(what));
        ereport(LOG, (errmsg("pgsink: %s %s by %s", what, pause ? "paused" : "resumed",
                             GetUserNameFromId(GetUserId(), false))));
    }
    PG_RETURN_BOOL(changed);
}

} // namespace pgsink

Datum pgsink_pause(PG_FUNCTION_ARGS)
{
    return pgsink::pause_or_resume(fcinfo, true);
}

Datum pgsink_resume(PG_FUNCTION_ARGS)
{
    return pgsink::pause_or_resume(fcinfo, false);
}
