/*
 * sink_factory.h: the sinks pgsink knows, by name (pgsink.sink lists them).
 * Nothing outside src/sinks/ knows which sinks exist: delivery workers hold
 * a Sink.
 */
#pragma once

#include <memory>
#include <string>

#include "sinks/sink.h"

namespace pgsink
{

/* Is there a sink of this name? (No PostgreSQL calls: usable in GUC check hooks.) */
bool sink_known(const char *name);
/* The names of all sinks, for messages: "file". */
const char *known_sink_names();

/* The sink of this name, made with its current settings. */
std::unique_ptr<Sink> make_sink(const std::string &name);

/*
 * The current settings of the sink, as one string: when it differs from the
 * one a sink was made with, the sink must be made again (after a reload).
 * Secrets are hashed, never held in the clear.
 */
std::string sink_settings(const std::string &name);

} // namespace pgsink
