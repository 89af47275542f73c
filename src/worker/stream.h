/*
 * stream.h: the stream worker's unit of work: decode WAL up to the flushed
 * position, append to the spool, confirm what the spool made durable.
 */
#pragma once

namespace pgsink
{

/*
 * Decode and deliver what is available. Returns how long to sleep before
 * the next call (0: more work is ready now).
 */
long stream_step();

/* Does the stream hold its slot (decoding)? */
bool stream_running();

/* Release the slot and the decoding context (shutdown, misconfiguration). */
void stream_stop();

/* About to read catalogs outside decoding: drop historic cache entries first. */
void stream_before_catalog_access();

/* The extension is gone: drop the slot so it does not hold WAL for nobody. */
void stream_extension_dropped();

} // namespace pgsink
