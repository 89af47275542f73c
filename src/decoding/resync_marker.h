/*
 * resync_marker.h: the need to resync, made durable before the replication
 * slot is dropped or created again after a loss.
 *
 * The slot is not transactional: a crash (or a rolled back add_table())
 * between creating the new slot and committing the resync jobs would leave
 * a healthy-looking slot, no jobs, and the loss forgotten. So the loss is
 * first written to the file "resync_needed" in the spool directory; the
 * stream worker resyncs at its next start while the file exists, and
 * removes it once the resync jobs are committed.
 *
 * Pure C++ but for PostgreSQL's LSN type; errors are thrown as pgsink::Error.
 */
#pragma once

#include <cstdint>
#include <cstdio>

namespace pgsink
{

/* Plain data (no destructor): it lives in frames where PostgreSQL may longjmp. */
struct ResyncMarker {
    uint64_t lost_from = 0; /* the last confirmed position known (0: unknown) */
    char why[128] = "";     /* "was missing", "was invalidated (...)" */
    void set_why(const char *w) { snprintf(why, sizeof(why), "%s", w); }
};

void write_resync_marker(const ResyncMarker &m);
/* False if there is none. */
bool read_resync_marker(ResyncMarker *m);
void remove_resync_marker();

} // namespace pgsink
