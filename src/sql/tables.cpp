/*
 * tables.cpp: pgsink.add_table() and pgsink.remove_table().
 *
 * Membership lives in pgsink.captured_tables, a user catalog table: the
 * output plugin reads it with the historic snapshot of each decoded
 * transaction, so a table added by a transaction committed at LSN X is
 * captured exactly from X on, and one removed stops exactly there.
 */
#include "boundary/pg_boundary.h"
#include "core/config.h"
#include "decoding/slot.h"
#include "core/shared_state.h"
#include "decoding/resync_marker.h"
#include "sql/run_as_owner.h"
#include "worker/workers.h"

extern "C" {
#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_namespace.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "commands/dbcommands.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"
#include "storage/procarray.h"
#include "access/xact.h"

PGDLLEXPORT Datum pgsink_add_table(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum pgsink_remove_table(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pgsink_add_table);
PG_FUNCTION_INFO_V1(pgsink_remove_table);
PGDLLEXPORT Datum pgsink_reimport(PG_FUNCTION_ARGS);
PGDLLEXPORT Datum pgsink_resync_table(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pgsink_resync_table);
PGDLLEXPORT Datum pgsink_cancel_import(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pgsink_reimport);
PG_FUNCTION_INFO_V1(pgsink_cancel_import);
}

namespace pgsink
{

/* The qualified name of a relation, quoted where SQL needs it, for messages. */
static char *qualified_name(Relation rel)
{
    return quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
                                      RelationGetRelationName(rel));
}

/* Refuse, with a message saying why and what to do instead. */
[[noreturn]] static void refuse(Relation rel, const char *why, const char *hint)
{
    ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
                    errmsg("pgsink cannot capture %s: %s", qualified_name(rel), why),
                    hint ? errhint("%s", hint) : 0));
    pg_unreachable();
}

/*
 * Check that rel is a table whose changes logical decoding can report with a
 * key: a WAL-logged, permanent, user table (or partitioned table) with a
 * primary key, a replica identity index, or REPLICA IDENTITY FULL.
 */
static void check_capturable(Relation rel)
{
    Oid nsp = RelationGetNamespace(rel);
    Oid pgsink_nsp = get_namespace_oid("pgsink", true);

    switch (rel->rd_rel->relkind) {
    case RELKIND_RELATION:
    case RELKIND_PARTITIONED_TABLE:
        break;
    case RELKIND_VIEW:
        refuse(rel, "it is a view", "Capture the tables the view reads from.");
    case RELKIND_MATVIEW:
        refuse(rel, "it is a materialized view",
               "Logical decoding does not report REFRESH; capture the tables it is built from.");
    case RELKIND_SEQUENCE:
        refuse(rel, "it is a sequence", "Only tables can be captured.");
    case RELKIND_FOREIGN_TABLE:
        refuse(rel, "it is a foreign table",
               "Its rows live on another server; capture them there.");
    default:
        refuse(rel, "it is not a table", "Only tables can be captured.");
    }

    if (IsCatalogRelation(rel) || IsToastNamespace(nsp) || nsp == PG_CATALOG_NAMESPACE ||
        strcmp(get_namespace_name(nsp), "information_schema") == 0)
        refuse(rel, "it is a system catalog", "Only user tables can be captured.");
    if (nsp == pgsink_nsp)
        refuse(rel, "it is one of pgsink's own tables", nullptr);
    if (rel->rd_rel->relpersistence == RELPERSISTENCE_TEMP)
        refuse(rel, "it is a temporary table",
               "Temporary tables are not written to WAL, so there are no changes to capture.");
    if (rel->rd_rel->relpersistence == RELPERSISTENCE_UNLOGGED)
        refuse(rel, "it is an unlogged table",
               "Unlogged tables are not written to WAL. Make it logged first: ALTER TABLE ... "
               "SET LOGGED.");

    char identity = rel->rd_rel->relreplident;
    bool has_pk = OidIsValid(RelationGetPrimaryKeyIndex(rel));
    if (identity == REPLICA_IDENTITY_NOTHING)
        refuse(rel, "its REPLICA IDENTITY is NOTHING, so deletes and updates carry no key",
               "Use ALTER TABLE ... REPLICA IDENTITY DEFAULT (with a primary key), USING INDEX, "
               "or FULL.");
    if (identity == REPLICA_IDENTITY_DEFAULT && !has_pk)
        refuse(rel, "it has no primary key, so deletes and updates carry no key",
               "Add a primary key, or set ALTER TABLE ... REPLICA IDENTITY FULL (or USING INDEX "
               "on a unique index).");
}

/* Non-superusers may only capture tables they can read. */
static void check_can_read(Relation rel)
{
    if (superuser())
        return;
    if (pg_class_aclcheck(RelationGetRelid(rel), GetUserId(), ACL_SELECT) != ACLCHECK_OK)
        ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                        errmsg("permission denied to capture %s", qualified_name(rel)),
                        errdetail("Capturing a table copies all of its rows to the sink."),
                        errhint("Ask its owner to GRANT SELECT on it to you.")));
}

/*
 * Log a relcache invalidation of the table and its partitions with this
 * transaction: the decoder then re-reads membership at exactly this point of
 * the WAL, also in transactions that were already running.
 */
static void invalidate_for_decoding(Oid relid)
{
    if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
        return; /* already dropped: nothing will be decoded for it */
    List *rels = find_all_inheritors(relid, NoLock, nullptr);
    ListCell *lc;
    foreach (lc, rels)
        CacheInvalidateRelcacheByRelid(lfirst_oid(lc));
    list_free(rels);
}

/*
 * Capture happens in pgsink.database only: a table of another database
 * would never be decoded (the slot belongs to one database).
 */
static void check_in_captured_database()
{
    const char *here = get_database_name(MyDatabaseId);
    if (here == nullptr || strcmp(here, guc_database) != 0)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("pgsink captures tables of database \"%s\", not of \"%s\"",
                               guc_database, here ? here : "?"),
                        errhint("Connect to database \"%s\", or set pgsink.database = '%s' in "
                                "postgresql.conf and reload.",
                                guc_database, here ? here : "?")));
}

/* End the unfinished import jobs of relid with state; returns how many there were. */
static uint64 end_unfinished_imports(Oid relid, const char *state, const char *why)
{
    Oid types[3] = {OIDOID, TEXTOID, TEXTOID};
    Datum values[3] = {ObjectIdGetDatum(relid), CStringGetTextDatum(state),
                       CStringGetTextDatum(why)};
    return run_as_owner("UPDATE pgsink.import_jobs SET state = $2, error = $3, "
                        "finished_at = pg_catalog.now() "
                        "WHERE relid OPERATOR(pg_catalog.=) $1 "
                        "AND state OPERATOR(pg_catalog.=) ANY ('{scheduled,running,failed}')",
                        3, types, values);
}

/*
 * Schedule an import of relid; the worker starts it once this transaction
 * commits. wait_for_older: the first chunk waits for the transactions that
 * are running when this one commits (add_table(); see the importer).
 */
static int64 schedule_import(Oid relid, bool wait_for_older, bool resync = false)
{
    Oid types[3] = {OIDOID, INT8OID, BOOLOID};
    Datum values[3] = {ObjectIdGetDatum(relid), Int64GetDatum(0), BoolGetDatum(resync)};
    char nulls[3] = {' ', wait_for_older ? ' ' : 'n', ' '};
    int64 id = 0;
    run_as_owner("INSERT INTO pgsink.import_jobs (relid, wait_for_xid, resync) VALUES ($1, $2, $3) "
                 "RETURNING id",
                 3, types, values, &id, nulls);
    request_import_scan();
    return id;
}

/* Is relid in pgsink.captured_tables? */
static bool is_captured(Oid relid)
{
    Oid types[1] = {OIDOID};
    Datum values[1] = {ObjectIdGetDatum(relid)};
    return run_as_owner("SELECT FROM pgsink.captured_tables WHERE relid OPERATOR(pg_catalog.=) $1",
                        1, types, values) > 0;
}

static Datum reimport(PG_FUNCTION_ARGS, bool resync)
{
    Oid relid = PG_GETARG_OID(0);
    check_in_captured_database();
    Relation rel = relation_open(relid, AccessShareLock);
    char *name = qualified_name(rel);
    check_can_read(rel);
    bool has_key =
        OidIsValid(RelationGetReplicaIndex(rel)) || OidIsValid(RelationGetPrimaryKeyIndex(rel));
    relation_close(rel, NoLock);
    if (!has_key)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("table %s cannot be %s: it has no key to page through", name,
                               resync ? "resynced" : "imported"),
                        errhint("Add a primary key (or a replica identity index), then call "
                                "pgsink.%s() again.",
                                resync ? "resync" : "reimport")));
    if (!is_captured(relid))
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("table %s is not captured", name),
                        errhint("Use pgsink.add_table(), which imports the table too.")));
    end_unfinished_imports(relid, "expired",
                           resync ? "replaced by a resync" : "replaced by a new import");
    int64 id = schedule_import(relid, false, resync);
    wake_worker_at_commit();
    PG_RETURN_INT64(id);
}

static Datum cancel_import(PG_FUNCTION_ARGS)
{
    Oid relid = PG_GETARG_OID(0);
    if (end_unfinished_imports(relid, "cancelled", "cancelled by pgsink.cancel_import()") == 0) {
        char *name = DatumGetCString(DirectFunctionCall1(regclassout, ObjectIdGetDatum(relid)));
        ereport(NOTICE, (errmsg("no unfinished import of table %s", name)));
        PG_RETURN_BOOL(false);
    }
    PG_RETURN_BOOL(true);
}

static Datum add_table(PG_FUNCTION_ARGS)
{
    Oid relid = PG_GETARG_OID(0);
    bool import = PG_ARGISNULL(1) ? true : PG_GETARG_BOOL(1);

    check_in_captured_database();
    Relation rel = relation_open(relid, AccessShareLock);
    check_capturable(rel);
    check_can_read(rel);
    char *name = qualified_name(rel);
    bool has_key =
        OidIsValid(RelationGetReplicaIndex(rel)) || OidIsValid(RelationGetPrimaryKeyIndex(rel));
    relation_close(rel, NoLock);
    /*
     * Before this transaction writes: changes are captured from its commit
     * on. A slot missing while tables are captured was lost: with
     * pgsink.auto_resync, the loss is made durable first (resync_marker.h),
     * and the stream worker resyncs every captured table when it starts,
     * whatever becomes of this transaction.
     */
    bool missing = SearchNamedReplicationSlot(guc_slot_name, true) == nullptr;
    uint64 captured =
        missing ? run_as_owner("SELECT FROM pgsink.captured_tables", 0, nullptr, nullptr) : 0;
    XLogRecPtr lost_from = InvalidXLogRecPtr;
    if (captured > 0 && guc_auto_resync) {
        LWLockAcquire(shared_lock, LW_SHARED);
        lost_from = shared->confirmed_lsn;
        LWLockRelease(shared_lock);
        ResyncMarker marker;
        if (!read_resync_marker(&marker)) {
            marker.lost_from = lost_from;
            marker.set_why("was missing");
            write_resync_marker(marker);
        }
    }
    if (ensure_slot(guc_slot_name) && captured > 0) {
        int64 newest_job = 0;
        run_as_owner("SELECT coalesce(pg_catalog.max(id), 0) FROM pgsink.import_jobs", 0, nullptr,
                     nullptr, &newest_job);
        report_lost_slot(guc_slot_name, static_cast<int64>(captured), lost_from,
                         read_slot_state(guc_slot_name).confirmed_flush, newest_job,
                         guc_auto_resync, "was missing");
        wake_worker();
    }

    /* Recorded as the caller, not as the owner the insert runs as. */
    Oid types[2] = {OIDOID, NAMEOID};
    Datum values[2] = {
        ObjectIdGetDatum(relid),
        DirectFunctionCall1(namein, CStringGetDatum(GetUserNameFromId(GetUserId(), false)))};
    uint64 added = run_as_owner(
        /* ON CONFLICT is not allowed on catalog tables; the lock serialises adders. */
        "LOCK TABLE pgsink.captured_tables IN SHARE ROW EXCLUSIVE MODE; "
        "INSERT INTO pgsink.captured_tables (relid, added_by) "
        "SELECT $1, $2 "
        "WHERE NOT EXISTS (SELECT FROM pgsink.captured_tables "
        "WHERE relid OPERATOR(pg_catalog.=) $1)",
        2, types, values);
    if (added == 0) {
        ereport(NOTICE, (errmsg("table %s is already captured", name)));
        PG_RETURN_BOOL(false);
    }
    if (import && !has_key) {
        ereport(
            NOTICE,
            (errmsg("table %s is captured without an import: it has no key to page through", name),
             errdetail("Its changes are captured from now on (REPLICA IDENTITY FULL); its "
                       "existing rows are not written to the sink."),
             errhint("Add a primary key and call pgsink.reimport() to import them.")));
        import = false;
    }
    if (import) {
        schedule_import(relid, true);
    } else if (TransactionIdPrecedes(GetOldestActiveTransactionId(), GetTopTransactionIdIfAny())) {
        ereport(NOTICE,
                (errmsg("transactions older than this call are still running"),
                 errdetail("Changes they made to %s before this call commits are not captured, "
                           "and with import => false nothing else writes them.",
                           name),
                 errhint("Wait for them to end before changing the table, or use import => "
                         "true: the import waits for them.")));
    }
    invalidate_for_decoding(relid);
    wake_worker_at_commit();
    PG_RETURN_BOOL(true);
}

static Datum remove_table(PG_FUNCTION_ARGS)
{
    Oid relid = PG_GETARG_OID(0);
    /* The relation may be gone (dropped while the event trigger was disabled). */
    const char *relname = get_rel_name(relid);
    const char *nspname = relname ? get_namespace_name(get_rel_namespace(relid)) : nullptr;
    char *name = relname && nspname ? quote_qualified_identifier(nspname, relname)
                                    : psprintf("with OID %u", relid);
    Oid types[1] = {OIDOID};
    Datum values[1] = {ObjectIdGetDatum(relid)};
    uint64 removed =
        run_as_owner("DELETE FROM pgsink.captured_tables WHERE relid OPERATOR(pg_catalog.=) $1", 1,
                     types, values);
    if (removed == 0) {
        ereport(NOTICE, (errmsg("table %s is not captured", name)));
        PG_RETURN_BOOL(false);
    }
    end_unfinished_imports(relid, "expired", "the table was removed from capture");
    invalidate_for_decoding(relid);
    wake_worker_at_commit();
    PG_RETURN_BOOL(true);
}

} // namespace pgsink

Datum pgsink_add_table(PG_FUNCTION_ARGS)
{
    return pgsink::cxx_entry([&] { return pgsink::add_table(fcinfo); });
}

Datum pgsink_reimport(PG_FUNCTION_ARGS)
{
    return pgsink::cxx_entry([&] { return pgsink::reimport(fcinfo, false); });
}

Datum pgsink_resync_table(PG_FUNCTION_ARGS)
{
    return pgsink::cxx_entry([&] { return pgsink::reimport(fcinfo, true); });
}

Datum pgsink_cancel_import(PG_FUNCTION_ARGS)
{
    return pgsink::cxx_entry([&] { return pgsink::cancel_import(fcinfo); });
}

Datum pgsink_remove_table(PG_FUNCTION_ARGS)
{
    return pgsink::cxx_entry([&] { return pgsink::remove_table(fcinfo); });
}
