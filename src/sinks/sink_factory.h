/*
 * sink_factory.h: the sinks pgsink knows, by name (pgsink.sink). Nothing
 * outside src/sinks/ knows which sinks exist: the stream holds a Sink.
 */
#pragma once

#include <memory>
#include <string>

#include "sinks/sink.h"

namespace pgsink
{

/* The sink pgsink.sink names, made with its current settings. */
std::unique_ptr<Sink> make_sink();

/*
 * The current settings of the configured sink, as one string: when it
 * differs from the one a sink was made with, the sink must be made again
 * (after a reload).
 */
std::string sink_settings();

} // namespace pgsink
