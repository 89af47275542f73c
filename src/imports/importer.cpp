/*
 * importer.cpp: reading import chunks and persisting their progress.
 *
 * One chunk is one short transaction: pick the job, write the low
 * watermark, take a fresh snapshot, read up to chunk_rows rows in key order
 * after the cursor (WHERE (k1, k2) > ($1, $2) ORDER BY k1, k2 LIMIT n), write
 * the high watermark, commit. No snapshot outlives the chunk, so vacuum keeps
 * working during an import of any size. The chunk size adapts to
 * pgsink.import_chunk_time, bounded by pgsink.import_chunk_rows.
 *
 * PostgreSQL calls that can fail run through pg_call(), so a failed chunk
 * (table altered, dropped, ...) becomes a PgError here: the transaction is
 * aborted and the job backs off exponentially, without stopping the stream.
 */
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "boundary/pg_boundary.h"
#include "changelog/json_writer.h"
#include "core/config.h"
#include "core/shared_state.h"
#include "decoding/relation_cache.h"
#include "decoding/value_encoder.h"
#include "core/restricted.h"
#include "imports/importer.h"

extern "C" {
#include "access/htup_details.h"
#include "access/nbtree.h"
#include "catalog/pg_am.h"
#include "catalog/pg_operator.h"
#include "commands/defrem.h"
#include "utils/syscache.h"
#include "utils/array.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/transam.h"
#include "storage/procarray.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "nodes/params.h"
#include "tcop/dest.h"
#include "utils/datum.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "replication/message.h"
#include "replication/slot.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/ruleutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

namespace pgsink
{

/* While no job is runnable, look at pgsink.import_jobs this often (or when asked). */
static constexpr long kIdleLookMs = 1000;
static constexpr int kMinChunkRows = 100;
/* While an import waits for transactions older than its add_table(), look this often. */
static constexpr long kWaitForOlderMs = 200;

bool Importer::due() const
{
    uint64 requests;
    LWLockAcquire(shared_lock, LW_SHARED);
    requests = shared->import_requests;
    LWLockRelease(shared_lock);
    return job_active_ || requests != requests_seen_ || GetCurrentTimestamp() >= next_look_;
}

void Importer::recycle(std::unique_ptr<ImportChunk> chunk)
{
    chunk->recycle();
    spare_ = std::move(chunk);
}

void Importer::reset()
{
    chunk_.reset();
    spare_.reset();
    active_import = nullptr;
    job_active_ = true;
}

/* The job to work on: the oldest runnable one. Marks it running. */
struct JobRow {
    int64 id = 0;
    Oid relid = InvalidOid;
    int chunk_rows = 0;
    ArrayType *cursor = nullptr; /* text[], or null */
    char *cursor_key = nullptr;  /* key_signature() the cursor was taken with, or null */
    uint64 wait_for_xid = 0;     /* first chunk waits for xids before this to end; 0: no */
    bool resync = false;         /* pgsink.resync(): opened and closed in the changelog */
    XLogRecPtr resync_since = InvalidXLogRecPtr; /* where its resync opened, once durable */
};

static bool pick_job(JobRow *job)
{
    /* Before this transaction takes an xid of its own (FOR UPDATE): see below. */
    FullTransactionId next_xid = ReadNextFullTransactionId();
    int rc = SPI_execute("SELECT id, relid, chunk_rows, cursor, cursor_key, wait_for_xid, "
                         "resync, resync_since "
                         "FROM pgsink.import_jobs "
                         "WHERE state OPERATOR(pg_catalog.=) ANY ('{scheduled,running}') "
                         "   OR (state OPERATOR(pg_catalog.=) 'failed' "
                         "       AND next_retry_at OPERATOR(pg_catalog.<=) pg_catalog.now()) "
                         "ORDER BY id LIMIT 1 FOR UPDATE",
                         false, 1);
    if (rc != SPI_OK_SELECT)
        elog(ERROR, "pgsink: could not read pgsink.import_jobs: %s", SPI_result_code_string(rc));
    if (SPI_processed == 0)
        return false;
    HeapTuple tup = SPI_tuptable->vals[0];
    TupleDesc desc = SPI_tuptable->tupdesc;
    bool isnull;
    job->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
    job->relid = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
    Datum rows = SPI_getbinval(tup, desc, 3, &isnull);
    job->chunk_rows = isnull ? 0 : DatumGetInt32(rows);
    Datum cursor = SPI_getbinval(tup, desc, 4, &isnull);
    job->cursor = isnull ? nullptr : DatumGetArrayTypePCopy(cursor);
    job->cursor_key = SPI_getvalue(tup, desc, 5);
    Datum resync = SPI_getbinval(tup, desc, 7, &isnull);
    job->resync = !isnull && DatumGetBool(resync);
    Datum since = SPI_getbinval(tup, desc, 8, &isnull);
    job->resync_since = isnull ? InvalidXLogRecPtr : DatumGetLSN(since);
    Datum wait = SPI_getbinval(tup, desc, 6, &isnull);
    job->wait_for_xid = isnull ? 0 : static_cast<uint64>(DatumGetInt64(wait));
    /*
     * 0: scheduled by add_table(), not seen yet. Every transaction that
     * could have changed the table before add_table() committed has an xid
     * below the next one now: the first chunk waits for them to end. (Ours
     * is not below it: the snapshot that checks never waits for itself.)
     */
    if (!isnull && job->wait_for_xid == 0)
        job->wait_for_xid = U64FromFullTransactionId(next_xid);

    Oid types[2] = {INT8OID, INT8OID};
    Datum values[2] = {Int64GetDatum(job->id), Int64GetDatum(job->wait_for_xid)};
    bool wait_null = job->wait_for_xid == 0;
    char nulls[2] = {' ', wait_null ? 'n' : ' '};
    rc = SPI_execute_with_args("UPDATE pgsink.import_jobs SET state = 'running', "
                               "started_at = coalesce(started_at, pg_catalog.clock_timestamp()), "
                               "wait_for_xid = $2 "
                               "WHERE id OPERATOR(pg_catalog.=) $1",
                               2, types, values, nulls, false, 0);
    if (rc != SPI_OK_UPDATE)
        elog(ERROR, "pgsink: could not update pgsink.import_jobs: %s", SPI_result_code_string(rc));
    return true;
}

/*
 * Have the transactions that were running when add_table() committed ended?
 * Their changes made before it were decoded as not captured, so the import
 * must see their rows: its first chunk waits, as CREATE INDEX CONCURRENTLY
 * waits for older transactions. While they run, the job says so; once they
 * have ended, the wait is over for good.
 */
static bool older_transactions_ended(const JobRow &job)
{
    /* The snapshot's xmin as a 64-bit xid (it is at most 2^31 behind the next one). */
    TransactionId oldest = GetActiveSnapshot()->xmin;
    FullTransactionId next = ReadNextFullTransactionId();
    uint32 epoch = EpochFromFullTransactionId(next);
    if (oldest > XidFromFullTransactionId(next))
        epoch--;
    bool ended = FullTransactionIdFollowsOrEquals(FullTransactionIdFromEpochAndXid(epoch, oldest),
                                                  FullTransactionIdFromU64(job.wait_for_xid));
    Oid types[2] = {INT8OID, TEXTOID};
    Datum values[2] = {Int64GetDatum(job.id), 0};
    char nulls[2] = {' ', 'n'};
    if (!ended) {
        int pid = BackendXidGetPid(oldest);
        values[1] = CStringGetTextDatum(
            psprintf("waiting for transaction %u%s to end: it was open when pgsink.add_table() "
                     "was called, and the import must see its rows",
                     oldest, pid ? psprintf(" (pid %d)", pid) : ""));
        nulls[1] = ' ';
    }
    int rc = SPI_execute_with_args(
        ended ? "UPDATE pgsink.import_jobs SET wait_for_xid = NULL, error = NULL "
                "WHERE id OPERATOR(pg_catalog.=) $1 AND $2 IS NULL"
              : "UPDATE pgsink.import_jobs SET state = 'scheduled', error = $2 "
                "WHERE id OPERATOR(pg_catalog.=) $1",
        2, types, values, nulls, false, 0);
    if (rc != SPI_OK_UPDATE)
        elog(ERROR, "pgsink: could not update pgsink.import_jobs: %s", SPI_result_code_string(rc));
    return ended;
}

/* Is relid still captured (the job may outlive a remove_table)? */
static bool still_captured(Oid relid)
{
    Oid types[1] = {OIDOID};
    Datum values[1] = {ObjectIdGetDatum(relid)};
    /* Not read_only: a fresh snapshot, at least as new as the one that found the job. */
    int rc = SPI_execute_with_args(
        "SELECT FROM pgsink.captured_tables WHERE relid OPERATOR(pg_catalog.=) $1", 1, types,
        values, nullptr, false, 1);
    return rc == SPI_OK_SELECT && SPI_processed == 1;
}

/*
 * What the cursor's values mean: for each key column, its attnum, type and
 * collation (OIDs: "attnum/type/collation,..."), which decide which column a
 * value belongs to and the order of the rows. A cursor taken with another
 * key (other columns, another type or collation) says nothing about where
 * the import stands in the order of the rows now: the import starts over.
 * Renaming a column, or changing a typmod, keeps the cursor.
 * readable: the key as a person reads it instead, for the log
 * ("region text COLLATE \"C\", id uuid").
 */
static char *key_signature(Relation rel, const RelationInfo &info, bool readable = false)
{
    StringInfoData sig;
    initStringInfo(&sig);
    TupleDesc desc = RelationGetDescr(rel);
    for (size_t i = 0; i < info.key_attnums.size(); i++) {
        Form_pg_attribute att = TupleDescAttr(desc, info.key_attnums[i] - 1);
        if (!readable) {
            appendStringInfo(&sig, "%s%d/%u/%u", i ? "," : "", att->attnum, att->atttypid,
                             att->attcollation);
            continue;
        }
        appendStringInfo(&sig, "%s%s %s", i ? ", " : "", quote_identifier(NameStr(att->attname)),
                         format_type_with_typemod(att->atttypid, att->atttypmod));
        if (OidIsValid(att->attcollation))
            appendStringInfo(&sig, " COLLATE %s", generate_collation_name(att->attcollation));
    }
    return sig.data;
}

/* The schema of an operator. */
static Oid operator_namespace(Oid opno)
{
    HeapTuple tup = SearchSysCache1(OPEROID, ObjectIdGetDatum(opno));
    if (!HeapTupleIsValid(tup))
        elog(ERROR, "pgsink: cache lookup failed for operator %u", opno);
    Oid nsp = ((Form_pg_operator)GETSTRUCT(tup))->oprnamespace;
    ReleaseSysCache(tup);
    return nsp;
}

/* "OPERATOR(schema.name)": an operator spelled so that no search_path can change it. */
static void append_qualified_operator(StringInfo out, Oid opno)
{
    appendStringInfo(out, "OPERATOR(%s.%s)",
                     quote_identifier(get_namespace_name(operator_namespace(opno))),
                     get_opname(opno));
}

/* The btree operator of a key column's default ordering for strategy (> or =). */
static Oid key_operator(Form_pg_attribute att, int16 strategy)
{
    Oid opclass = GetDefaultOpClass(att->atttypid, BTREE_AM_OID);
    if (!OidIsValid(opclass))
        ereport(ERROR,
                (errcode(ERRCODE_UNDEFINED_FUNCTION),
                 errmsg("key column %s has type %s, which has no default btree ordering",
                        quote_identifier(NameStr(att->attname)), format_type_be(att->atttypid)),
                 errhint("Use a key whose type can be ordered.")));
    Oid type = get_opclass_input_type(opclass);
    Oid opno = get_opfamily_member(get_opclass_family(opclass), type, type, strategy);
    if (!OidIsValid(opno))
        elog(ERROR, "pgsink: no btree operator %d for type %s", strategy,
             format_type_be(att->atttypid));
    return opno;
}

/*
 * The keyset query of a table:
 *   SELECT * FROM [ONLY] s.t WHERE ROW(k1, k2) OPERATOR(pg_catalog.>)
 *     ROW($1::s.type1, $2::s.type2) ORDER BY k1, k2 LIMIT n
 * Partitioned tables are read through the root (all partitions, root's
 * layout). Every operator and type is schema-qualified: the query runs as
 * the table's owner, who may have created look-alikes on any search_path.
 * Keys whose ordering operators live in different schemas are compared
 * column by column (k1 > $1 OR (k1 = $1 AND k2 > $2)).
 */
static char *chunk_query(Relation rel, const RelationInfo &info, bool with_cursor, int limit)
{
    StringInfoData sql;
    initStringInfo(&sql);
    bool partitioned = rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE;
    appendStringInfo(&sql, "SELECT * FROM %s%s", partitioned ? "" : "ONLY ",
                     quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
                                                RelationGetRelationName(rel)));
    TupleDesc desc = RelationGetDescr(rel);
    /* palloc'd, not std::vector: this runs under pg_call(), whose ERROR jumps over this frame. */
    size_t nkeys = info.key_attnums.size();
    const char **cols = static_cast<const char **>(palloc(nkeys * sizeof(char *)));
    const char **params = static_cast<const char **>(palloc(nkeys * sizeof(char *)));
    Oid *gt = static_cast<Oid *>(palloc(nkeys * sizeof(Oid)));
    Oid *eq = static_cast<Oid *>(palloc(nkeys * sizeof(Oid)));
    bool one_namespace = true;
    for (size_t i = 0; i < nkeys; i++) {
        Form_pg_attribute att = TupleDescAttr(desc, info.key_attnums[i] - 1);
        cols[i] = quote_identifier(NameStr(att->attname));
        params[i] = psprintf("$%zu::%s", i + 1,
                             format_type_extended(att->atttypid, -1, FORMAT_TYPE_FORCE_QUALIFY));
        gt[i] = key_operator(att, BTGreaterStrategyNumber);
        eq[i] = key_operator(att, BTEqualStrategyNumber);
        one_namespace &= operator_namespace(gt[i]) == operator_namespace(gt[0]);
    }
    StringInfoData order;
    initStringInfo(&order);
    for (size_t i = 0; i < nkeys; i++)
        appendStringInfo(&order, "%s%s", i ? ", " : "", cols[i]);
    if (with_cursor && one_namespace) {
        appendStringInfoString(&sql, " WHERE ");
        if (nkeys > 1)
            appendStringInfo(&sql, "ROW(%s) ", order.data);
        else
            appendStringInfo(&sql, "%s ", cols[0]);
        append_qualified_operator(&sql, gt[0]);
        appendStringInfoString(&sql, nkeys > 1 ? " ROW(" : " ");
        for (size_t i = 0; i < nkeys; i++)
            appendStringInfo(&sql, "%s%s", i ? ", " : "", params[i]);
        if (nkeys > 1)
            appendStringInfoChar(&sql, ')');
    } else if (with_cursor) {
        appendStringInfoString(&sql, " WHERE (");
        for (size_t i = 0; i < nkeys; i++) {
            appendStringInfoString(&sql, i ? " OR (" : "(");
            for (size_t j = 0; j < i; j++) {
                appendStringInfo(&sql, "%s ", cols[j]);
                append_qualified_operator(&sql, eq[j]);
                appendStringInfo(&sql, " %s AND ", params[j]);
            }
            appendStringInfo(&sql, "%s ", cols[i]);
            append_qualified_operator(&sql, gt[i]);
            appendStringInfo(&sql, " %s)", params[i]);
        }
        appendStringInfoChar(&sql, ')');
    }
    appendStringInfo(&sql, " ORDER BY %s LIMIT %d", order.data, limit);
    return sql.data;
}

/*
 * Receives the rows of a chunk query straight from the executor and encodes
 * them into the chunk: no copy of the tuples into an SPI tuple table, one
 * deforming per row, JSON appended to the chunk's packed buffers.
 */
struct ChunkReceiver {
    DestReceiver pub; /* first: the executor knows it as a DestReceiver */
    ImportChunk *chunk;
    const RelationInfo *info;
    /* SELECT * yields info.columns in order; if those are attnums 1..n, no spreading. */
    bool direct;
    Datum *values; /* indexed by attnum - 1, when not direct */
    bool *nulls;
    MemoryContext row_cxt; /* detoasting and output functions of one row */
    /* The last row's key values (the cursor after the chunk). */
    std::vector<int> key_positions; /* in the query's columns */
    bool key_by_reference;
    MemoryContext key_cxt;
    Datum *last_key;
    /* A chunk holds about this much JSON at most (pgsink.batch_bytes): wide rows, fewer. */
    size_t max_bytes;
    bool stopped; /* the chunk is full before its row limit */
};

/* The query's columns must be info.columns, in order: rows are encoded by position. */
static void chunk_receiver_startup(DestReceiver *self, int, TupleDesc typeinfo)
{
    ChunkReceiver *r = reinterpret_cast<ChunkReceiver *>(self);
    if (typeinfo->natts != static_cast<int>(r->info->columns.size()))
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("pgsink: the import query returned %d columns, expected %zu",
                               typeinfo->natts, r->info->columns.size())));
}
static void chunk_receiver_shutdown(DestReceiver *) {}
static void chunk_receiver_destroy(DestReceiver *) {}

static bool chunk_receive(TupleTableSlot *slot, DestReceiver *self)
{
    ChunkReceiver *r = reinterpret_cast<ChunkReceiver *>(self);
    const RelationInfo &info = *r->info;
    slot_getallattrs(slot);
    const Datum *values = slot->tts_values;
    const bool *nulls = slot->tts_isnull;
    if (!r->direct) {
        for (size_t i = 0; i < info.columns.size(); i++) {
            int at = info.columns[i].attnum - 1;
            r->values[at] = slot->tts_values[i];
            r->nulls[at] = slot->tts_isnull[i];
        }
        values = r->values;
        nulls = r->nulls;
    }
    MemoryContext old = MemoryContextSwitchTo(r->row_cxt);
    cxx_entry([&] {
        ImportChunk &chunk = *r->chunk;
        append_row_json(chunk.key_data, info, values, nulls, true);
        append_row_json(chunk.row_data, info, values, nulls, false);
        chunk.row_added();
    });
    MemoryContextSwitchTo(old);
    MemoryContextReset(r->row_cxt);

    if (r->key_by_reference)
        MemoryContextReset(r->key_cxt);
    for (size_t k = 0; k < r->key_positions.size(); k++) {
        int position = r->key_positions[k];
        Form_pg_attribute att = TupleDescAttr(slot->tts_tupleDescriptor, position);
        r->last_key[k] = att->attbyval ? slot->tts_values[position] : 0;
    }
    if (r->key_by_reference) {
        old = MemoryContextSwitchTo(r->key_cxt);
        for (size_t k = 0; k < r->key_positions.size(); k++) {
            int position = r->key_positions[k];
            Form_pg_attribute att = TupleDescAttr(slot->tts_tupleDescriptor, position);
            if (!att->attbyval)
                r->last_key[k] = datumCopy(slot->tts_values[position], false, att->attlen);
        }
        MemoryContextSwitchTo(old);
    }
    if (r->chunk->row_data.size() + r->chunk->key_data.size() >= r->max_bytes) {
        r->stopped = true;
        return false; /* the executor stops here */
    }
    return true;
}

/* Set up r for info's rows into chunk; allocations in CurrentMemoryContext. */
static void init_chunk_receiver(ChunkReceiver &r, ImportChunk &chunk, const RelationInfo &info,
                                TupleDesc desc)
{
    r.pub.receiveSlot = chunk_receive;
    r.pub.rStartup = chunk_receiver_startup;
    r.pub.rShutdown = chunk_receiver_shutdown;
    r.pub.rDestroy = chunk_receiver_destroy;
    r.pub.mydest = DestNone; /* not DestSPI: SPI returns SPI_OK_UTILITY, not SPI_OK_SELECT */
    r.chunk = &chunk;
    r.info = &info;
    r.direct = true;
    for (size_t i = 0; i < info.columns.size(); i++)
        if (info.columns[i].attnum != static_cast<AttrNumber>(i + 1))
            r.direct = false;
    r.values = static_cast<Datum *>(palloc0(desc->natts * sizeof(Datum)));
    r.nulls = static_cast<bool *>(palloc0(desc->natts * sizeof(bool)));
    r.row_cxt =
        AllocSetContextCreate(CurrentMemoryContext, "pgsink import row", ALLOCSET_DEFAULT_SIZES);
    r.key_cxt =
        AllocSetContextCreate(CurrentMemoryContext, "pgsink import cursor", ALLOCSET_SMALL_SIZES);
    r.key_by_reference = false;
    for (AttrNumber attnum : info.key_attnums) {
        for (size_t i = 0; i < info.columns.size(); i++)
            if (info.columns[i].attnum == attnum)
                r.key_positions.push_back(static_cast<int>(i));
        if (!TupleDescAttr(desc, attnum - 1)->attbyval)
            r.key_by_reference = true;
    }
    r.last_key = static_cast<Datum *>(palloc0((info.key_attnums.size() + 1) * sizeof(Datum)));
    r.max_bytes = static_cast<size_t>(guc_batch_bytes_kb) * 1024;
    r.stopped = false;
}

/* The cursor's key values (text, cast to the key types in the query) as query parameters. */
static ParamListInfo cursor_params(const Datum *values, int n)
{
    ParamListInfo params = makeParamList(n);
    for (int i = 0; i < n; i++) {
        params->params[i].value = values[i];
        params->params[i].isnull = false;
        params->params[i].pflags = PARAM_FLAG_CONST;
        params->params[i].ptype = TEXTOID;
    }
    return params;
}

/* The last row's key values as text, for the job's cursor. */
static void append_cursor_text(std::vector<std::string> &out, const ChunkReceiver &r,
                               TupleDesc desc)
{
    for (size_t k = 0; k < r.info->key_attnums.size(); k++) {
        Form_pg_attribute att = TupleDescAttr(desc, r.info->key_attnums[k] - 1);
        char *text = pg_call([&] {
            Oid output;
            bool varlena;
            getTypeOutputInfo(att->atttypid, &output, &varlena);
            return OidOutputFunctionCall(output, r.last_key[k]);
        });
        out.emplace_back(text);
    }
}

uint64 watermark_token()
{
    static uint64 token = 0;
    while (token == 0)
        if (!pg_strong_random(&token, sizeof(token)))
            throw Error(ERRCODE_INTERNAL_ERROR, "could not generate a random number");
    return token;
}

/*
 * A chunk's watermark: a non-transactional message "<L|H> <job> <chunk>
 * <token>". pg_logical_emit_message() is open to every role, so anyone can
 * write a message with this prefix: the token, a random number only this
 * process knows, tells the decoder which watermarks are the importer's.
 */
static XLogRecPtr write_watermark(char kind, int64 job, uint64 chunk_no, uint64 token)
{
    char message[96];
    int len =
        snprintf(message, sizeof(message), "%c %lld %llu %llu", kind, static_cast<long long>(job),
                 static_cast<unsigned long long>(chunk_no), static_cast<unsigned long long>(token));
    return LogLogicalMessage(kImportMessagePrefix, message, len, false);
}

/*
 * After the slot was lost (see report_lost_slot()), pgsink.status asks for
 * re-imports until each captured table that can be imported has an import
 * scheduled since, committed. Runs in the worker's transaction.
 */
static void clear_lost_slot_problem_if_reimported()
{
    LWLockAcquire(shared_lock, LW_SHARED);
    bool lost = shared->slot_lost;
    int64 watermark = shared->slot_lost_watermark;
    LWLockRelease(shared_lock);
    if (!lost)
        return;
    Oid types[1] = {INT8OID};
    Datum values[1] = {Int64GetDatum(watermark)};
    int rc = SPI_execute_with_args("SELECT FROM pgsink.captured_tables c "
                                   "WHERE EXISTS (SELECT FROM pg_catalog.pg_index i "
                                   "              WHERE i.indrelid OPERATOR(pg_catalog.=) c.relid "
                                   "                AND (i.indisprimary OR i.indisreplident)) "
                                   "  AND NOT EXISTS (SELECT FROM pgsink.import_jobs j "
                                   "                  WHERE j.relid OPERATOR(pg_catalog.=) c.relid "
                                   "                    AND j.id OPERATOR(pg_catalog.>) $1 "
                                   "                    AND (NOT j.resync "
                                   "                         OR j.state OPERATOR(pg_catalog.=) "
                                   "'complete')) "
                                   "LIMIT 1",
                                   1, types, values, nullptr, true, 1);
    if (rc != SPI_OK_SELECT || SPI_processed > 0)
        return;
    /* Unless a new loss was reported meanwhile. */
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    bool same = shared->slot_lost && shared->slot_lost_watermark == watermark;
    if (same) {
        shared->slot_lost = false;
        shared->problems[static_cast<int>(ProblemKind::slot_lost)][0] = '\0';
    }
    LWLockRelease(shared_lock);
    if (!same)
        return;
    ereport(LOG, (errmsg("pgsink: every captured table was resynced or re-imported after the "
                         "replication slot was lost")));
}

bool Importer::read_next_chunk()
{
    if (chunk_)
        return false;
    LWLockAcquire(shared_lock, LW_SHARED);
    requests_seen_ = shared->import_requests;
    LWLockRelease(shared_lock);

    std::unique_ptr<ImportChunk> chunk =
        spare_ ? std::move(spare_) : std::make_unique<ImportChunk>();
    RelationInfo info;
    int64 failed_job = 0;
    char failure[kErrorLen] = "";
    bool read = false;
    bool retry_soon = false;
    bool table_locked = false; /* by another session: look again in a moment */
    bool expire = false;       /* the job can never succeed: end it */

    pg_call([] {
        SetCurrentStatementStartTimestamp(); /* else now() stays at the worker's start */
        StartTransactionCommand();
        SPI_connect();
        PushActiveSnapshot(GetTransactionSnapshot());
    });
    try {
        pg_call([] { clear_lost_slot_problem_if_reimported(); });
        JobRow job;
        if (!pg_call([&] { return pick_job(&job); })) {
            job_active_ = false;
            next_look_ = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), kIdleLookMs);
            pg_call([] {
                PopActiveSnapshot();
                SPI_finish();
                CommitTransactionCommand();
            });
            /* No import to run: give the buffers' memory back. */
            chunk.reset();
            return false;
        }
        job_active_ = true;
        failed_job = job.id;
        if (!pg_call([&] { return still_captured(job.relid); }))
            throw Error(ERRCODE_UNDEFINED_TABLE, "the table is no longer captured");
        if (job.wait_for_xid != 0 && !pg_call([&] { return older_transactions_ended(job); })) {
            pg_call([] {
                PopActiveSnapshot();
                SPI_finish();
                CommitTransactionCommand();
            });
            recycle(std::move(chunk));
            job_active_ = false; /* look again in a moment */
            next_look_ = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), kWaitForOlderMs);
            return false;
        }

        /*
         * The job's row is locked (FOR UPDATE): waiting here for a lock a
         * DROP TABLE holds would deadlock with the DROP's event trigger,
         * which updates that row (and PostgreSQL would cancel the DROP). So
         * no wait: a table being dropped or altered is tried again shortly.
         */
        if (!pg_call([&] { return ConditionalLockRelationOid(job.relid, AccessShareLock); })) {
            table_locked = true;
            throw Error(ERRCODE_T_R_SERIALIZATION_FAILURE, "retry: the table is locked");
        }
        Relation rel = pg_call([&] { return try_relation_open(job.relid, NoLock); });
        if (rel == nullptr)
            throw Error(ERRCODE_UNDEFINED_TABLE, "the table no longer exists");
        info.mcxt = pg_call([] {
            return AllocSetContextCreate(CurrentMemoryContext, "pgsink import",
                                         ALLOCSET_SMALL_SIZES);
        });
        TupleDesc desc = RelationGetDescr(rel);
        describe_relation(info, rel, desc);
        if (info.key_attnums.empty())
            throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                        "the table has no primary key or replica identity index to page through",
                        "Add a primary key, then call pgsink.reimport().");

        int nkeys = static_cast<int>(info.key_attnums.size());
        bool with_cursor = job.cursor != nullptr;
        Datum *cursor_values = nullptr;
        int ncursor = 0;
        const char *signature = pg_call([&] { return key_signature(rel, info); });
        if (with_cursor && (job.cursor_key == nullptr || strcmp(job.cursor_key, signature) != 0)) {
            pg_call([&] {
                ereport(LOG, (errmsg("pgsink: the key of table %s changed during import job %lld; "
                                     "the import starts over from the first row",
                                     quote_qualified_identifier(
                                         get_namespace_name(RelationGetNamespace(rel)),
                                         RelationGetRelationName(rel)),
                                     static_cast<long long>(job.id)),
                              errdetail("The key is now (%s); the import's cursor was taken with "
                                        "other key columns, types or collations.",
                                        key_signature(rel, info, true))));
            });
            with_cursor = false;
        }
        chunk->cursor_key = signature;
        if (with_cursor) {
            pg_call([&] {
                deconstruct_array(job.cursor, TEXTOID, -1, false, TYPALIGN_INT, &cursor_values,
                                  nullptr, &ncursor);
            });
            if (ncursor != nkeys) /* the key changed since: start over */
                with_cursor = false;
        }
        int limit = job.chunk_rows > 0 ? job.chunk_rows : std::min(1000, guc_import_chunk_rows);
        limit = std::clamp(limit, kMinChunkRows, guc_import_chunk_rows);
        const char *sql = pg_call([&] { return chunk_query(rel, info, with_cursor, limit); });
        chunk->job_id = job.id;
        chunk->chunk_no = ++chunk_seq_;
        chunk->relid = job.relid;
        chunk->name_json = info.name_json;
        chunk->schema_json = info.schema_json;
        chunk->chunk_rows = limit;

        /*
         * A resync opens at the low watermark of a chunk that starts from the
         * first row (its first, or a start over), and closes after the rows
         * of its last chunk (see the changelog's resync rule).
         */
        chunk->resync_open = job.resync && !with_cursor;
        chunk->resync_since = job.resync_since;

        /* Low watermark, then a snapshot taken after it. */
        pg_call([&] {
            chunk->low_lsn = write_watermark('L', job.id, chunk->chunk_no, watermark_token());
            PopActiveSnapshot();
            PushActiveSnapshot(GetTransactionSnapshot());
        });
        Snapshot snap = GetActiveSnapshot();
        chunk->xmin = snap->xmin;
        chunk->xmax = snap->xmax;
        chunk->xip.assign(snap->xip, snap->xip + snap->xcnt);
        std::sort(chunk->xip.begin(), chunk->xip.end());
        /*
         * A transaction the snapshot does not see but that has committed may
         * have been streamed before the chunk existed: its change would be
         * overwritten by the older row read here. Rare (a commit between its
         * WAL record and its visibility); read again a moment later.
         */
        for (TransactionId xid : chunk->xip)
            if (pg_call([&] { return TransactionIdDidCommit(xid); }))
                throw Error(ERRCODE_T_R_SERIALIZATION_FAILURE, "retry: snapshot race");

        ChunkReceiver receiver;
        pg_call([&] { init_chunk_receiver(receiver, *chunk, info, desc); });
        SPIExecuteOptions options;
        memset(&options, 0, sizeof(options));
        options.read_only = true;
        options.dest = &receiver.pub;
        if (with_cursor)
            options.params = pg_call([&] { return cursor_params(cursor_values, nkeys); });

        TimestampTz started = GetCurrentTimestamp();
        chunk->read_at = started;
        /*
         * The rows are read, and the cursor cast and printed, as the table's
         * owner in a security-restricted operation: domain checks, casts and
         * operators run with the owner's rights, never the worker's. An
         * error aborts the transaction, which restores the worker's identity.
         */
        Oid owner = rel->rd_rel->relowner;
        RestrictedContext saved = pg_call([&] { return enter_restricted(owner, true); });
        int rc = pg_call([&] { return SPI_execute_extended(sql, &options); });
        if (rc < 0)
            throw Error(ERRCODE_INTERNAL_ERROR,
                        std::string("could not read the table: ") + SPI_result_code_string(rc));
        uint64 n = chunk->size();
        if (n > 0)
            append_cursor_text(chunk->last_key, receiver, desc);
        pg_call([&] { leave_restricted(saved); });
        if (n == 0 && with_cursor) {
            for (int i = 0; i < nkeys; i++)
                chunk->last_key.emplace_back(
                    pg_call([&] { return TextDatumGetCString(cursor_values[i]); }));
        }
        chunk->last_chunk = n < static_cast<uint64>(limit) && !receiver.stopped;
        chunk->resync_close = job.resync && chunk->last_chunk;

        /* Adapt the next chunk to the time budget. */
        long elapsed_ms = std::max<long>(1, (GetCurrentTimestamp() - started) / 1000);
        double scale = static_cast<double>(guc_import_chunk_time_ms) / elapsed_ms;
        /* A chunk that filled up on bytes read n rows in that time, not limit. */
        double base = receiver.stopped ? static_cast<double>(n) : limit;
        chunk->next_chunk_rows = std::clamp(static_cast<int>(base * std::min(scale, 2.0)),
                                            kMinChunkRows, guc_import_chunk_rows);

        pg_call([&] {
            XLogRecPtr high = write_watermark('H', job.id, chunk->chunk_no, watermark_token());
            relation_close(rel, AccessShareLock);
            PopActiveSnapshot();
            SPI_finish();
            CommitTransactionCommand();
            XLogFlush(high); /* let the decoder reach it now */
        });
        read = true;
    } catch (const Error &e) {
        if (e.sqlstate() == ERRCODE_T_R_SERIALIZATION_FAILURE)
            retry_soon = true;
        expire = e.sqlstate() == ERRCODE_UNDEFINED_TABLE;
        strlcpy(failure, e.what(), sizeof(failure));
    } catch (const PgError &e) {
        strlcpy(failure, e.what(), sizeof(failure));
    } catch (const std::exception &e) {
        /* Out of memory, avro-c, ...: the job fails and backs off; the stream goes on. */
        strlcpy(failure, e.what(), sizeof(failure));
    } catch (...) {
        strlcpy(failure, "unknown C++ exception", sizeof(failure));
    }

    if (!read) {
        pg_call([] { AbortCurrentTransaction(); });
        recycle(std::move(chunk));
        chunk_seq_++;
        if (!retry_soon && failed_job != 0)
            record_failure(failed_job, failure, expire);
        if (table_locked) {
            job_active_ = false;
            next_look_ = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), kWaitForOlderMs);
        }
        if (failed_job == 0 && failure[0] != '\0') {
            /* No job to blame (pgsink.import_jobs unreadable): say it, at most once a minute. */
            static TimestampTz said_at = 0;
            TimestampTz now = GetCurrentTimestamp();
            if (TimestampDifferenceExceeds(said_at, now, 60000)) {
                said_at = now;
                ereport(WARNING,
                        (errmsg("pgsink: imports cannot run: %s", failure),
                         errhint("If the extension was just upgraded, run ALTER EXTENSION pgsink "
                                 "UPDATE in pgsink.database.")));
            }
            next_look_ = TimestampTzPlusMilliseconds(now, kIdleLookMs);
        }
        return false;
    }
    chunk_ = std::move(chunk);
    active_import = chunk_.get();
    return true;
}

void Importer::record_failure(int64 job_id, const char *message, bool expire)
{
    if (expire) {
        ereport(LOG, (errmsg("pgsink: import job %lld expired: %s", static_cast<long long>(job_id),
                             message)));
        pg_call([&] {
            SetCurrentStatementStartTimestamp(); /* else now() stays at the worker's start */
            StartTransactionCommand();
            SPI_connect();
            PushActiveSnapshot(GetTransactionSnapshot());
            Oid types[2] = {INT8OID, TEXTOID};
            Datum values[2] = {Int64GetDatum(job_id), CStringGetTextDatum(message)};
            SPI_execute_with_args(
                "UPDATE pgsink.import_jobs SET state = 'expired', error = $2, "
                "started_at = coalesce(started_at, pg_catalog.now()), "
                "finished_at = pg_catalog.now() WHERE id OPERATOR(pg_catalog.=) $1",
                2, types, values, nullptr, false, 0);
            PopActiveSnapshot();
            SPI_finish();
            CommitTransactionCommand();
        });
        return;
    }
    ereport(WARNING,
            (errmsg("pgsink: import job %lld failed: %s", static_cast<long long>(job_id), message),
             errdetail("It is retried with exponential back-off; the stream goes on.")));
    pg_call([&] {
        SetCurrentStatementStartTimestamp(); /* else now() stays at the worker's start */
        StartTransactionCommand();
        SPI_connect();
        PushActiveSnapshot(GetTransactionSnapshot());
        Oid types[3] = {INT8OID, TEXTOID, INT4OID};
        Datum values[3] = {Int64GetDatum(job_id), CStringGetTextDatum(message),
                           Int32GetDatum(guc_retry_max_interval_ms)};
        SPI_execute_with_args("UPDATE pgsink.import_jobs SET state = 'failed', error = $2, "
                              "error_count = error_count OPERATOR(pg_catalog.+) 1, "
                              "started_at = coalesce(started_at, pg_catalog.now()), "
                              "next_retry_at = pg_catalog.now() OPERATOR(pg_catalog.+) "
                              "  pg_catalog.make_interval(secs => least(pg_catalog.power(2, "
                              "  least(error_count, 20)), $3 OPERATOR(pg_catalog./) 1000.0)) "
                              "WHERE id OPERATOR(pg_catalog.=) $1 AND state "
                              "OPERATOR(pg_catalog.=) ANY ('{scheduled,running,failed}')",
                              3, types, values, nullptr, false, 0);
        PopActiveSnapshot();
        SPI_finish();
        CommitTransactionCommand();
    });
}

void Importer::after_confirm(XLogRecPtr confirmed)
{
    if (!ready_to_persist(confirmed))
        return;
    ImportChunk &c = *chunk_;
    /*
     * The slot must be durable past H before the cursor moves: otherwise a
     * crash could replay from before H, drop the chunk's rows from the sink,
     * and find no chunk to emit at H.
     */
    ReplicationSlotMarkDirty();
    ReplicationSlotSave();

    pg_call([&] {
        SetCurrentStatementStartTimestamp(); /* else now() stays at the worker's start */
        StartTransactionCommand();
        SPI_connect();
        PushActiveSnapshot(GetTransactionSnapshot());
        /* The cursor as a text[] built value by value: every byte of every key survives. */
        int nkeys = static_cast<int>(c.last_key.size());
        Datum *keys = static_cast<Datum *>(palloc((nkeys + 1) * sizeof(Datum)));
        for (int i = 0; i < nkeys; i++)
            keys[i] = PointerGetDatum(
                cstring_to_text_with_len(c.last_key[i].data(), c.last_key[i].size()));
        ArrayType *cursor = construct_array(keys, nkeys, TEXTOID, -1, false, TYPALIGN_INT);
        Oid types[8] = {INT8OID, TEXTARRAYOID, INT8OID, INT4OID, BOOLOID, BOOLOID, TEXTOID, LSNOID};
        Datum values[8] = {Int64GetDatum(c.job_id),
                           PointerGetDatum(cursor),
                           Int64GetDatum(static_cast<int64>(c.emitted_rows)),
                           Int32GetDatum(c.next_chunk_rows),
                           BoolGetDatum(c.last_chunk),
                           BoolGetDatum(c.last_key.empty()),
                           CStringGetTextDatum(c.cursor_key.c_str()),
                           LSNGetDatum(c.resync_open_lsn)};
        char nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', c.resync_open ? ' ' : 'n'};
        SPI_execute_with_args(
            "UPDATE pgsink.import_jobs SET "
            "cursor = CASE WHEN $6 THEN cursor ELSE $2 END, "
            "cursor_key = CASE WHEN $6 THEN cursor_key ELSE $7 END, "
            "rows_imported = rows_imported OPERATOR(pg_catalog.+) $3, "
            "chunks = chunks OPERATOR(pg_catalog.+) 1, chunk_rows = $4, "
            "state = CASE WHEN $5 THEN 'complete' ELSE 'running' END, "
            "finished_at = CASE WHEN $5 THEN pg_catalog.clock_timestamp() END, next_retry_at = "
            "NULL, resync_since = coalesce($8, resync_since) "
            "WHERE id OPERATOR(pg_catalog.=) $1 "
            "AND state OPERATOR(pg_catalog.=) ANY ('{running,failed}')",
            8, types, values, nulls, false, 0);
        PopActiveSnapshot();
        SPI_finish();
        CommitTransactionCommand();
    });
    if (c.last_chunk)
        ereport(LOG,
                (errmsg("pgsink: import job %lld complete", static_cast<long long>(c.job_id))));
    recycle(std::move(chunk_));
    active_import = nullptr;
}

} // namespace pgsink
