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

/* Run one SQL string (maybe several statements) with parameters; rows processed by the last. */
uint64 run_as_owner(const char *sql, int nargs, Oid *types, Datum *values);

} // namespace pgsink
