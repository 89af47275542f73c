/*
 * sink_factory.cpp: see sink_factory.h. The one place that reads the
 * sinks' settings (GUCs) and maps a sink name to a class.
 */
#include <cstring>

#include "sinks/sink_factory.h"
#include "core/config.h"
#include "sinks/file_sink.h"

namespace pgsink
{

bool sink_known(const char *name)
{
    return strcmp(name, "file") == 0;
}

const char *known_sink_names()
{
    return "file";
}

std::unique_ptr<Sink> make_sink(const std::string &name)
{
    if (name == "file")
        return std::make_unique<FileSink>(guc_file_path);
    throw std::runtime_error("pgsink: unknown sink \"" + name + "\"");
}

std::string sink_settings(const std::string &name)
{
    if (name == "file")
        return std::string("file:") + guc_file_path;
    return "unknown";
}

} // namespace pgsink
