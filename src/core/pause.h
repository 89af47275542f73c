/*
 * pause.h: pgsink.pause() and pgsink.resume() (decoding, or one sink's
 * delivery), kept in shared memory (PauseState) and in a file of the data
 * directory, so that a pause outlives a restart of the server: an operator
 * who paused pgsink for maintenance resumes it, nothing else does.
 */
#pragma once

#include "core/shared_state.h"

namespace pgsink
{

/* The file, relative to the data directory. */
constexpr const char *kPauseFile = "pgsink_pause.state";

/* Read the file into p (at shared memory initialization; a missing file: nothing paused). */
void load_pause_state(PauseState *p);

/*
 * Pause or resume decoding (sink nullptr) or a sink's delivery; writes the
 * file durably and wakes the worker concerned. Returns whether anything
 * changed. Throws pgsink::Error if the file cannot be written (nothing
 * changed then).
 */
bool set_paused(const char *sink, bool paused);

/* Since when decoding is paused; 0: it is not. */
TimestampTz decoding_paused_since();
/* Since when the sink's delivery is paused; 0: it is not. */
TimestampTz sink_paused_since(const char *sink);

/* Serializes set_paused() (the file's writes). */
extern LWLock *pause_lock;

} // namespace pgsink
