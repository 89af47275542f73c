/*
 * sink_factory.cpp: see sink_factory.h. The one place that reads the
 * sinks' settings (GUCs) and maps pgsink.sink to a class.
 */
#include "sinks/sink_factory.h"
#include "core/config.h"
#include "sinks/file_sink.h"

namespace pgsink
{

std::unique_ptr<Sink> make_sink()
{
    switch (static_cast<SinkKind>(guc_sink)) {
    case SINK_FILE:
        return std::make_unique<FileSink>(guc_file_path);
    }
    throw std::runtime_error("pgsink: unknown sink " + std::to_string(guc_sink));
}

std::string sink_settings()
{
    switch (static_cast<SinkKind>(guc_sink)) {
    case SINK_FILE:
        return std::string("file:") + guc_file_path;
    }
    return "unknown";
}

} // namespace pgsink
