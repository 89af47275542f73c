/*
 * run_as_owner.h: statements on pgsink's own tables, run as the extension's
 * owner, so that members of pgsink_admin need no privilege on the tables.
 */
#pragma once

extern "C" {
#include "postgres.h"
}

namespace pgsink
{

/*
 * Run one SQL string (maybe several statements) with parameters; returns the
 * rows processed by the last. If first_int8 is given, it receives the first
 * column of the first row returned (a bigint), or 0.
 */
uint64 run_as_owner(const char *sql, int nargs, Oid *types, Datum *values,
                    int64 *first_int8 = nullptr, const char *nulls = nullptr);

} // namespace pgsink
