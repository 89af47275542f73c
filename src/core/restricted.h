/*
 * restricted.h: running SQL with elevated rights, or as a table's owner,
 * without letting anybody's code run with more rights than its owner has.
 *
 * Everything pgsink runs as its extension owner (a superuser) or in its
 * workers pins search_path to "pg_catalog, pg_temp", so no operator,
 * function or type another role created can be picked by name resolution.
 * User data (import chunks) is read as the table's owner, in a
 * security-restricted operation, as autovacuum, REFRESH MATERIALIZED VIEW
 * and index builds do: domain checks, casts and operators the owner wrote
 * run with the owner's rights, never the superuser's.
 *
 * Both are undone by leave_restricted(), or by the transaction's abort.
 */
#pragma once

extern "C" {
#include "postgres.h"
}

namespace pgsink
{

/* search_path for everything run with elevated rights. */
constexpr const char *kSafeSearchPath = "pg_catalog, pg_temp";

struct RestrictedContext {
    Oid saved_userid;
    int saved_sec_context;
    int guc_level;
};

/*
 * Become role (InvalidOid: stay who we are) in a security-restricted
 * operation, with search_path pinned; no_row_security: row_security = off,
 * so a query that row-level security would filter fails instead of
 * returning fewer rows. May ERROR.
 */
RestrictedContext enter_restricted(Oid role, bool no_row_security);
void leave_restricted(const RestrictedContext &saved);

/* Pin search_path for this process (the workers), for good. */
void pin_session_search_path();

} // namespace pgsink
