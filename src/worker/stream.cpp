#include "worker/stream.h"
#include "core/config.h"
namespace pgsink {
long stream_step() { return guc_poll_interval_ms; }
void stream_stop() {}
void stream_extension_dropped() {}
} // namespace pgsink
