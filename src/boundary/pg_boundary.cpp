/*
 * pg_boundary.cpp: the PG_TRY side of pg_call() and the ereport side of
 * cxx_entry(). Kept out of line so that no frame holding C++ objects ever
 * contains a sigsetjmp.
 */
#include <exception>

#include "boundary/pg_boundary.h"

namespace pgsink
{

void pg_call_void(void (*fn)(void *), void *arg)
{
    MemoryContext oldcxt = CurrentMemoryContext;
    ErrorData *volatile edata = nullptr;
    /*
     * A C++ exception thrown by fn must not unwind through PG_TRY: that would
     * leave PG_exception_stack pointing into this dead frame. Catch it inside
     * and rethrow it once PG_END_TRY has restored the stack.
     */
    std::exception_ptr cxx_error;

    PG_TRY();
    {
        try {
            fn(arg);
        } catch (...) {
            cxx_error = std::current_exception();
        }
    }
    PG_CATCH();
    {
        /* Copy the error out of ErrorContext before resetting the error state. */
        MemoryContextSwitchTo(oldcxt);
        edata = CopyErrorData();
        FlushErrorState();
    }
    PG_END_TRY();

    if (cxx_error)
        std::rethrow_exception(cxx_error);
    if (edata != nullptr)
        throw PgError(edata);
}

void raise_caught(ErrorData *pg, int sqlstate, const char *message, const char *hint)
{
    if (pg != nullptr)
        ReThrowError(pg);
    ereport(ERROR,
            (errcode(sqlstate), errmsg("%s", message), hint[0] != '\0' ? errhint("%s", hint) : 0));
    pg_unreachable();
}

} // namespace pgsink
