/*
 * wake.cpp: wake the stream worker when a transaction that changed what
 * pgsink captures commits, so the change takes effect at once.
 */
#include "core/shared_state.h"
#include "worker/workers.h"

extern "C" {
#include "access/xact.h"
}

namespace pgsink
{

static bool wake_pending = false;
static bool callback_registered = false;

static void wake_on_commit(XactEvent event, void *arg)
{
    switch (event) {
    case XACT_EVENT_COMMIT:
    case XACT_EVENT_PARALLEL_COMMIT:
        if (wake_pending)
            wake_worker();
        wake_pending = false;
        break;
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
        wake_pending = false;
        break;
    default:
        break;
    }
}

void wake_worker_at_commit()
{
    if (!callback_registered) {
        RegisterXactCallback(wake_on_commit, nullptr);
        callback_registered = true;
    }
    wake_pending = true;
}

} // namespace pgsink
