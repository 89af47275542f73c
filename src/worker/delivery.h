/*
 * delivery.h: a sink's delivery worker: reads the spool from the sink's
 * cursor, writes to the sink, and saves the cursor once the sink made the
 * batch durable (see worker/delivery.cpp).
 */
#pragma once

namespace pgsink
{

/* Deliver until the sink leaves pgsink.sink (then it returns) or an ERROR; slot is its index. */
void delivery_loop(int slot, const char *sink);

} // namespace pgsink
