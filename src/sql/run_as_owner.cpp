/*
 * run_as_owner.cpp: see run_as_owner.h.
 */
#include "sql/run_as_owner.h"
#include "core/restricted.h"

extern "C" {
#include "access/htup_details.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/syscache.h"
}

namespace pgsink
{

/* The role that ran CREATE EXTENSION pgsink: a superuser, as the control file requires. */
static Oid extension_owner()
{
    Oid extoid = get_extension_oid("pgsink", false);
    HeapTuple tup = SearchSysCache1(EXTENSIONOID, ObjectIdGetDatum(extoid));
    if (!HeapTupleIsValid(tup))
        elog(ERROR, "pgsink: cache lookup failed for extension %u", extoid);
    Oid owner = ((Form_pg_extension)GETSTRUCT(tup))->extowner;
    ReleaseSysCache(tup);
    return owner;
}

/*
 * Run one statement on pgsink's tables as the extension's owner, so that
 * members of pgsink_admin need no privilege on the tables themselves. The
 * caller's search_path is replaced by pg_catalog, pg_temp: an operator or
 * function the caller created can never be picked by the owner's statement.
 * Returns the number of rows processed.
 */
uint64 run_as_owner(const char *sql, int nargs, Oid *types, Datum *values, int64 *first_int8,
                    const char *nulls)
{
    Oid owner = extension_owner();

    RestrictedContext saved = enter_restricted(owner, false);
    SPI_connect();
    int rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);
    if (rc < 0)
        elog(ERROR, "pgsink: could not update pgsink's tables: %s", SPI_result_code_string(rc));
    uint64 processed = SPI_processed;
    if (first_int8 != nullptr) {
        *first_int8 = 0;
        if (SPI_tuptable != nullptr && SPI_processed > 0) {
            bool isnull;
            Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
            if (!isnull)
                *first_int8 = DatumGetInt64(d);
        }
    }
    SPI_finish();
    leave_restricted(saved);
    return processed;
}

} // namespace pgsink
