/*
 * delivery.h: a sink's delivery worker: reads the spool from the sink's
 * cursor, writes to the sink, and saves the cursor once the sink made the
 * batch durable (see worker/delivery.cpp).
 */
#pragma once

namespace pgsink
{

/* Deliver forever (returns only by ERROR or by proc_exit); slot is the sink's index. */
void delivery_loop(int slot, const char *sink);

} // namespace pgsink
