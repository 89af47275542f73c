/*
 * output_plugin.cpp: pgsink as a logical decoding output plugin.
 *
 * Turns the changes of captured tables into changelog entries (see
 * README.md, "The changelog"). The callbacks run under a historic catalog
 * snapshot: they read catalogs and build entries in memory, never use SPI
 * or read user tables. Entries go to an EntryConsumer: the stream worker's
 * batch, or the rows of pg_logical_slot_get_changes() for SQL users.
 */
#include <string>
#include <vector>

#include "boundary/pg_boundary.h"
#include "changelog/json_writer.h"
#include "decoding/entry_consumer.h"
#include "decoding/relation_cache.h"
#include "imports/import_chunk.h"

extern "C" {
#include "mb/pg_wchar.h"
#include "access/htup_details.h"
#include "replication/logical.h"
#include "replication/output_plugin.h"
#include "replication/reorderbuffer.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/syscache.h"
#include "utils/memutils.h"

PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);
}

namespace pgsink
{

EntryConsumer *worker_consumer = nullptr;
ImportChunk *active_import = nullptr;

/* Entries as rows of pg_logical_slot_get_changes(). */
class SqlConsumer final : public EntryConsumer
{
  public:
    explicit SqlConsumer(LogicalDecodingContext *ctx) : ctx_(ctx) {}
    std::string &buffer() override { return buf_; }
    void entry_done(Oid) override
    {
        pg_call([&] {
            OutputPluginPrepareWrite(ctx_, true);
            appendBinaryStringInfo(ctx_->out, buf_.data(), static_cast<int>(buf_.size()));
            OutputPluginWrite(ctx_, true);
        });
        buf_.clear();
    }
    void commit(const TxnMeta &, uint64) override {}

  private:
    LogicalDecodingContext *ctx_;
    std::string buf_;
};

/* The plugin's state for one decoding context. */
struct Decoder {
    std::string drop_name; /* name_json of a dropped table (on_drop()) */
    RelationCache rels;
    EntryConsumer *consumer = nullptr;
    std::unique_ptr<SqlConsumer> sql_consumer;
    MemoryContext change_cxt = nullptr;
    int guc_level = 0; /* SQL interface: the settings fixed for this decoding call */

    /*
     * Entries are written here, then appended to the consumer's buffer in
     * one piece (or several, for rows too big for it).
     */
    char out_storage[64 * 1024];
    json::Out out{out_storage};

    TxnMeta txn;
    uint64 sequence = 0;
    std::string txn_head; /* "{\"timestamp\":\"2024-...+00:00\"", built at the first entry */
    std::string txn_lsn;  /* "\"0/16B3748\"" */
    std::string txn_xid;  /* ",\"xid\":927" */
    /* Changes of this transaction supersede rows of the pending import chunk. */
    bool txn_conflicts_with_import = false;
    std::string key_scratch;

    /* Scratch, reused for every row (indexed by attnum - 1). */
    Datum values[MaxTupleAttributeNumber];
    Datum old_values[MaxTupleAttributeNumber];
    bool nulls[MaxTupleAttributeNumber];
    bool old_nulls[MaxTupleAttributeNumber];
    bool omit[MaxTupleAttributeNumber];
    std::string_view raw[MaxTupleAttributeNumber];
    /* The pending import chunk's copy of the row this change supersedes; empty if none. */
    std::string_view superseded_row;
    std::vector<const ColumnInfo *> unchanged;
    std::vector<Oid> truncated;
};

static Decoder *active_decoder = nullptr;

/* A schema was renamed (or dropped): every reported name may have changed. */
static void namespace_invalidated(Datum, int, uint32)
{
    if (active_decoder)
        active_decoder->rels.invalidate(InvalidOid);
}

static void relcache_invalidated(Datum, Oid relid)
{
    if (active_decoder)
        active_decoder->rels.invalidate(relid);
}

/* The decoding context's memory is going away: so does the Decoder. */
static void free_decoder(void *arg)
{
    Decoder *d = static_cast<Decoder *>(arg);
    if (active_decoder == d)
        active_decoder = nullptr;
    /* change_cxt is a child of the dying context: it is already gone. */
    delete d;
}

/* The parts of every entry's head that are the same for a whole transaction. */
static void build_txn_head(Decoder &d)
{
    char storage[2 * json::Out::kMaxReserve];
    json::Out out(storage);
    out.begin(d.txn_head);
    out.literal("{\"timestamp\":");
    char *p = out.reserve(json::kMaxDateTimeLen);
    char *end = json::format_timestamp(p, d.txn.commit_time, true, true);
    if (end == nullptr) {
        /* Outside years 1..9999 (never, for a commit): an empty string, as always. */
        memcpy(p, "\"\"", 2);
        end = p + 2;
    }
    out.commit(end);
    out.flush();
    out.begin(d.txn_lsn);
    json::append_lsn(out, d.txn.commit_lsn);
    out.flush();
    out.begin(d.txn_xid);
    out.literal(",\"xid\":");
    json::append_uint(out, d.txn.xid);
    out.flush();
}

/* Start an entry in the consumer's buffer, with its timestamp. */
static json::Out &begin_entry(Decoder &d)
{
    if (d.txn_head.empty())
        build_txn_head(d);
    json::Out &out = d.out;
    out.begin(d.consumer->buffer());
    out.append(d.txn_head);
    return out;
}

/* Close the entry (of table relid; InvalidOid: a Schema entry) and hand it to the consumer. */
static void end_entry(Decoder &d, Oid relid)
{
    d.out.put('}');
    d.out.flush();
    if (relid == InvalidOid)
        d.consumer->schema_done();
    else
        d.consumer->entry_done(relid);
}

/*
 * A Schema entry; relid (the table's OID, after the schema so that readers
 * of the head keep their fixed prefix) stays the same across renames.
 */
static void write_schema(Decoder &d, const std::string &schema_json, Oid relid)
{
    json::Out &out = begin_entry(d);
    out.literal(",\"lsn\":");
    out.append(d.txn_lsn);
    out.literal(",\"schema\":");
    out.append(schema_json);
    out.literal(",\"relid\":");
    json::append_uint(out, relid);
    end_entry(d, InvalidOid);
}

static bool is_unchanged_toast(const ColumnInfo &col, Datum v)
{
    return col.is_varlena && VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(v));
}

/*
 * A row as a JSON object. key_only: the replica identity's columns only.
 * An unchanged TOASTed value (not in WAL) is taken from the old row when it
 * is there, else left out and listed in d.unchanged.
 */
static void write_row(Decoder &d, json::Out &out, const RelationInfo &info, bool key_only,
                      bool with_old)
{
    bool any_omitted = false;
    for (const ColumnInfo &col : info.columns) {
        int i = col.attnum - 1;
        d.omit[i] = false;
        if (key_only && !col.is_key)
            continue;
        if (!d.nulls[i] && is_unchanged_toast(col, d.values[i])) {
            if (with_old && !d.old_nulls[i] && !is_unchanged_toast(col, d.old_values[i]))
                d.values[i] = d.old_values[i];
            else
                d.omit[i] = any_omitted = true;
        }
    }
    const std::string_view *raw = nullptr;
    if (any_omitted && !key_only && !d.superseded_row.empty() &&
        split_row_json(d.superseded_row, info, d.raw)) {
        /* Unchanged TOAST values from the import chunk's copy of the row; the rest from WAL. */
        raw = d.raw;
        for (const ColumnInfo &col : info.columns) {
            int i = col.attnum - 1;
            if (!d.omit[i])
                d.raw[i] = std::string_view();
            d.omit[i] = false;
        }
        any_omitted = false;
    }
    if (any_omitted)
        for (const ColumnInfo &col : info.columns)
            if (d.omit[col.attnum - 1])
                d.unchanged.push_back(&col);
    append_row_json(out, info, d.values, d.nulls, key_only, any_omitted ? d.omit : nullptr, raw);
}

/* The name of a change's operation; empty for those that are not captured. */
static std::string_view op_name(ReorderBufferChangeType type)
{
    switch (type) {
    case REORDER_BUFFER_CHANGE_INSERT:
        return "insert";
    case REORDER_BUFFER_CHANGE_UPDATE:
        return "update";
    case REORDER_BUFFER_CHANGE_DELETE:
        return "delete";
    default:
        return {};
    }
}

/* Timestamp, sequence, name, op and lsn: the head every modification and import shares. */
static json::Out &write_entry_head(Decoder &d, const std::string &name_json, std::string_view op)
{
    json::Out &out = begin_entry(d);
    out.literal(",\"sequence\":");
    json::append_uint(out, ++d.sequence);
    out.put(',');
    out.append(name_json);
    out.literal(",\"op\":\"");
    out.append(op);
    out.literal("\",\"lsn\":");
    out.append(d.txn_lsn);
    return out;
}

static json::Out &write_modification_head(Decoder &d, const RelationInfo &info, std::string_view op)
{
    json::Out &out = write_entry_head(d, info.name_json, op);
    out.append(d.txn_xid);
    return out;
}

/* The key of a row as JSON, exactly as the importer writes it for its chunk rows. */
static const std::string &key_json(Decoder &d, const RelationInfo &info, TupleDesc desc,
                                   HeapTuple tup)
{
    heap_deform_tuple(tup, desc, d.values, d.nulls);
    d.key_scratch.clear();
    d.out.begin(d.key_scratch);
    write_row(d, d.out, info, true, false);
    d.out.flush();
    return d.key_scratch;
}

/* Rows of the pending import chunk that this change makes stale are dropped from it. */
static void drop_superseded_import_rows(Decoder &d, const RelationInfo &info, TupleDesc desc,
                                        HeapTuple oldtup, HeapTuple newtup)
{
    if (info.key_attnums.empty()) {
        active_import->drop_all();
        return;
    }
    long old_index = oldtup ? active_import->drop_key(key_json(d, info, desc, oldtup)) : -1;
    long new_index = newtup ? active_import->drop_key(key_json(d, info, desc, newtup)) : -1;
    /*
     * The first change of a chunk row sees exactly the chunk's version (every
     * earlier change was visible to the chunk's snapshot): that copy is the
     * row before this change, the source of the values an update leaves
     * unchanged in TOAST, which WAL does not carry.
     */
    long before = oldtup ? old_index : new_index;
    if (before >= 0)
        d.superseded_row = active_import->row(before);
}

/*
 * A captured table was dropped: the event trigger pgsink._forget_dropped_tables
 * inserted (relid, schema_name, table_name) into pgsink.dropped_tables, which
 * only pgsink may write, in the dropping transaction. It becomes a "drop"
 * entry of that transaction, so sinks can drop or archive their copy.
 */
/* s in UTF-8 (palloc'd in the change's context, or s itself). */
static const char *utf8_of(const char *s)
{
    int encoding = GetDatabaseEncoding();
    if (encoding == PG_UTF8 || encoding == PG_SQL_ASCII)
        return s;
    return pg_server_to_any(s, static_cast<int>(strlen(s)), PG_UTF8);
}

static void on_dropped(Decoder &d, Relation log, HeapTuple row)
{
    TupleDesc desc = RelationGetDescr(log);
    if (desc->natts < 3)
        return;
    heap_deform_tuple(row, desc, d.values, d.nulls);
    if (d.nulls[0] || d.nulls[1] || d.nulls[2])
        return;
    Oid relid = DatumGetObjectId(d.values[0]);
    /*
     * Names in UTF-8 whatever the database's encoding, as every name is;
     * converted (which can ERROR) before any C++ object holds them.
     */
    const char *nsp = utf8_of(NameStr(*DatumGetName(d.values[1])));
    const char *name = utf8_of(NameStr(*DatumGetName(d.values[2])));
    d.drop_name.clear();
    d.drop_name.append("\"namespace\":");
    json::append_string(d.drop_name, nsp);
    d.drop_name.append(",\"name\":");
    json::append_string(d.drop_name, name);
    json::Out &out = write_entry_head(d, d.drop_name, "drop");
    out.literal(",\"xid\":");
    json::append_uint(out, d.txn.xid);
    out.literal(",\"before\":null,\"after\":null,\"relid\":");
    json::append_uint(out, relid);
    end_entry(d, relid);
}

static void on_change(Decoder &d, Relation relation, ReorderBufferChange *change)
{
    std::string_view op = op_name(change->action);
    if (op.empty())
        return;
    if (d.rels.is_drop_log(RelationGetRelid(relation))) {
        if (change->action == REORDER_BUFFER_CHANGE_INSERT && change->data.tp.newtuple)
            on_dropped(d, relation, &change->data.tp.newtuple->tuple);
        return;
    }
    if (d.rels.is_membership_table(RelationGetRelid(relation))) {
        d.rels.membership_changed();
        return;
    }
    RelationInfo &info = d.rels.get(relation);
    if (!info.captured)
        return;
    if (d.rels.schema_needs_sending(info))
        write_schema(d, info.schema_json, info.target_relid);

    HeapTuple newtup = change->data.tp.newtuple ? &change->data.tp.newtuple->tuple : nullptr;
    HeapTuple oldtup = change->data.tp.oldtuple ? &change->data.tp.oldtuple->tuple : nullptr;
    TupleDesc desc = RelationGetDescr(relation);
    if (info.to_root) {
        if (newtup)
            newtup = execute_attr_map_tuple(newtup, info.to_root);
        if (oldtup)
            oldtup = execute_attr_map_tuple(oldtup, info.to_root);
        desc = info.to_root->outdesc;
    }

    d.superseded_row = {};
    if (d.txn_conflicts_with_import && active_import && !active_import->emitted &&
        active_import->relid == info.target_relid)
        drop_superseded_import_rows(d, info, desc, oldtup, newtup);

    json::Out &out = write_modification_head(d, info, op);
    d.unchanged.clear();

    bool key_only = info.replident != REPLICA_IDENTITY_FULL;
    out.literal(",\"before\":");
    if (oldtup) {
        heap_deform_tuple(oldtup, desc, d.values, d.nulls);
        write_row(d, out, info, key_only, false);
    } else if (change->action == REORDER_BUFFER_CHANGE_UPDATE && newtup &&
               info.replident != REPLICA_IDENTITY_NOTHING) {
        /* The key did not change, so PostgreSQL logged no old key: it is the new one. */
        heap_deform_tuple(newtup, desc, d.values, d.nulls);
        write_row(d, out, info, true, false);
    } else {
        out.literal("null");
    }

    out.literal(",\"after\":");
    if (newtup) {
        bool with_old = false;
        if (oldtup) {
            heap_deform_tuple(oldtup, desc, d.old_values, d.old_nulls);
            with_old = true;
        }
        heap_deform_tuple(newtup, desc, d.values, d.nulls);
        d.unchanged.clear();
        write_row(d, out, info, false, with_old);
    } else {
        out.literal("null");
    }
    if (!d.unchanged.empty()) {
        out.literal(",\"unchanged\":[");
        for (size_t i = 0; i < d.unchanged.size(); i++) {
            if (i)
                out.put(',');
            json::append_string(out, d.unchanged[i]->name);
        }
        out.put(']');
    }
    end_entry(d, info.target_relid);
}

static void on_truncate(Decoder &d, int nrelations, Relation relations[])
{
    d.truncated.clear();
    for (int i = 0; i < nrelations; i++) {
        if (d.rels.is_membership_table(RelationGetRelid(relations[i]))) {
            d.rels.membership_changed();
            continue;
        }
        RelationInfo &info = d.rels.get(relations[i]);
        if (!info.captured)
            continue;
        /* TRUNCATE of a partitioned table lists every partition: report the root once. */
        bool seen = false;
        for (Oid t : d.truncated)
            seen |= t == info.target_relid;
        if (seen)
            continue;
        d.truncated.push_back(info.target_relid);
        if (d.txn_conflicts_with_import && active_import && !active_import->emitted &&
            active_import->relid == info.target_relid)
            active_import->drop_all();
        if (d.rels.schema_needs_sending(info))
            write_schema(d, info.schema_json, info.target_relid);
        json::Out &out = write_modification_head(d, info, "truncate");
        out.literal(",\"before\":null,\"after\":null");
        end_entry(d, info.target_relid);
    }
}

/* Run a callback body with the per-change memory context, released after. */
template <typename F> static void in_change_context(Decoder &d, F &&f)
{
    MemoryContext old = MemoryContextSwitchTo(d.change_cxt);
    f();
    MemoryContextSwitchTo(old);
    MemoryContextReset(d.change_cxt);
}

static Decoder &decoder_of(LogicalDecodingContext *ctx)
{
    return *static_cast<Decoder *>(ctx->output_plugin_private);
}

} // namespace pgsink

using namespace pgsink;

static void pgsink_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init)
{
    static bool relcache_callback_registered = false;

    opt->output_type = OUTPUT_PLUGIN_TEXTUAL_OUTPUT;
    opt->receive_rewrites = false;

    if (ctx->output_plugin_options != NIL)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("the pgsink output plugin takes no options")));

    Decoder *d = cxx_entry([&] {
        auto decoder = std::make_unique<Decoder>();
        if (worker_consumer != nullptr) {
            decoder->consumer = worker_consumer;
        } else {
            decoder->sql_consumer = std::make_unique<SqlConsumer>(ctx);
            decoder->consumer = decoder->sql_consumer.get();
        }
        return decoder.release();
    });
    d->change_cxt = AllocSetContextCreate(ctx->context, "pgsink change", ALLOCSET_DEFAULT_SIZES);
    MemoryContextCallback *cb = static_cast<MemoryContextCallback *>(
        MemoryContextAllocZero(ctx->context, sizeof(MemoryContextCallback)));
    cb->func = free_decoder;
    cb->arg = d;
    MemoryContextRegisterResetCallback(ctx->context, cb);
    ctx->output_plugin_private = d;
    active_decoder = d;

    if (!relcache_callback_registered) {
        CacheRegisterRelcacheCallback(relcache_invalidated, (Datum)0);
        CacheRegisterSyscacheCallback(NAMESPACEOID, namespace_invalidated, (Datum)0);
        relcache_callback_registered = true;
    }
    /* The worker fixed its settings for good; a SQL caller's are restored at shutdown. */
    if (worker_consumer == nullptr)
        d->guc_level = fix_output_settings(false);
}

static void pgsink_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
    Decoder &d = decoder_of(ctx);
    d.txn.commit_lsn = txn->final_lsn;
    d.txn.xid = txn->xid;
    d.txn.commit_time = txn->xact_time.commit_time;
    d.sequence = 0;
    d.txn_head.clear();
    d.txn_lsn.clear();
    d.txn_xid.clear();
    /*
     * Transactions are replayed in commit order, watermarks at their WAL
     * position: after L, every transaction commits between L and H.
     */
    d.txn_conflicts_with_import = active_import != nullptr && !active_import->emitted &&
                                  (active_import->window_open || !active_import->visible(txn->xid));
    /*
     * A transaction whose commit record is before L but that the chunk's
     * snapshot did not see (it was still waiting for its WAL flush) is in
     * the stream, not in the chunk: the resync must count it as written
     * since it opened, so it opens at its commit at the latest.
     */
    if (d.txn_conflicts_with_import && active_import->resync_open && !active_import->window_open &&
        (active_import->resync_floor == InvalidXLogRecPtr ||
         txn->final_lsn < active_import->resync_floor))
        active_import->resync_floor = txn->final_lsn;
}

static void pgsink_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation relation,
                          ReorderBufferChange *change)
{
    Decoder &d = decoder_of(ctx);
    in_change_context(d, [&] { cxx_entry([&] { on_change(d, relation, change); }); });
}

static void pgsink_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, int nrelations,
                            Relation relations[], ReorderBufferChange *change)
{
    Decoder &d = decoder_of(ctx);
    in_change_context(d, [&] { cxx_entry([&] { on_truncate(d, nrelations, relations); }); });
}

static void pgsink_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr commit_lsn)
{
    Decoder &d = decoder_of(ctx);
    if (d.sequence > 0)
        cxx_entry([&] { d.consumer->commit(d.txn, d.sequence); });
}

/* At the high watermark: the chunk's surviving rows, as "import" entries at H's position. */
/* Start a pseudo-transaction of the stream worker's own (imports, resyncs) at lsn. */
static void begin_own_transaction(Decoder &d, XLogRecPtr lsn, TimestampTz at)
{
    d.txn.commit_lsn = lsn;
    d.txn.xid = InvalidTransactionId;
    d.txn.commit_time = at;
    d.sequence = 0;
    d.txn_head.clear();
    d.txn_lsn.clear();
    d.txn_xid.clear();
}

/* A "resync_start" or "resync_end" entry of the chunk's table (see the changelog's resync rule). */
static void write_resync_entry(Decoder &d, ImportChunk &chunk, const char *op, XLogRecPtr since)
{
    json::Out &out = write_entry_head(d, chunk.name_json, op);
    out.literal(",\"xid\":null,\"before\":null,\"after\":null");
    if (since != InvalidXLogRecPtr) {
        out.literal(",\"resync_since\":");
        json::append_lsn(out, since);
    }
    end_entry(d, chunk.relid);
}

/* The low watermark of a chunk that opens a resync: "resync_start", alone, at lsn. */
static void emit_resync_start(Decoder &d, ImportChunk &chunk, XLogRecPtr lsn)
{
    begin_own_transaction(d, lsn, chunk.read_at);
    if (d.rels.announce_schema(chunk.relid, chunk.schema_json))
        write_schema(d, chunk.schema_json, chunk.relid);
    write_resync_entry(d, chunk, "resync_start", InvalidXLogRecPtr);
    /* What the rule counts from: L, or an earlier commit the snapshot missed. */
    chunk.resync_open_lsn = chunk.resync_floor != InvalidXLogRecPtr && chunk.resync_floor < lsn
                                ? chunk.resync_floor
                                : lsn;
    d.consumer->commit(d.txn, d.sequence);
}

static void emit_import(Decoder &d, ImportChunk &chunk, XLogRecPtr lsn)
{
    begin_own_transaction(d, lsn, chunk.read_at);
    if (d.rels.announce_schema(chunk.relid, chunk.schema_json))
        write_schema(d, chunk.schema_json, chunk.relid);
    for (size_t i = 0; i < chunk.size(); i++) {
        if (chunk.dropped[i])
            continue;
        json::Out &out = write_entry_head(d, chunk.name_json, "import");
        out.literal(",\"xid\":null,\"before\":null,\"after\":");
        out.append(chunk.row(i));
        end_entry(d, chunk.relid);
    }
    chunk.emitted_rows = d.sequence;
    /* The resync closes after the last chunk's rows: what it did not write since it opened is gone.
     */
    if (chunk.resync_close)
        write_resync_entry(d, chunk, "resync_end",
                           chunk.resync_open ? chunk.resync_open_lsn : chunk.resync_since);
    if (d.sequence > 0)
        d.consumer->commit(d.txn, d.sequence);
}

/*
 * Watermarks of imports: non-transactional messages "L <job> <chunk>" and
 * "H <job> <chunk>" with prefix pgsink-import. Watermarks of a chunk the
 * worker no longer holds (written before a restart) are ignored: that chunk
 * is read again from the persisted cursor.
 */
static void on_message(Decoder &d, LogicalDecodingContext *ctx, XLogRecPtr lsn, bool transactional,
                       const char *prefix, Size size, const char *message)
{
    if (transactional || strcmp(prefix, kImportMessagePrefix) != 0 || active_import == nullptr ||
        d.consumer != worker_consumer)
        return;
    char kind;
    long long job;
    unsigned long long chunk_no, token;
    /* A plain buffer: no C++ object may be alive while the rows are emitted below. */
    char text[64];
    if (size >= sizeof(text))
        return;
    memcpy(text, message, size);
    text[size] = '\0';
    if (sscanf(text, "%c %lld %llu %llu", &kind, &job, &chunk_no, &token) != 4)
        return;
    ImportChunk &chunk = *active_import;
    /* Anyone may log a message with this prefix: only the importer knows the token. */
    if (job != chunk.job_id || chunk_no != chunk.chunk_no || chunk.emitted ||
        token != watermark_token())
        return;
    if (kind == 'L' && chunk.window_open)
        return; /* one L per chunk */
    if (kind == 'L') {
        chunk.window_open = true;
        /* Every transaction committed after L comes after it (its record's start: unique). */
        if (chunk.resync_open)
            emit_resync_start(d, chunk, ctx->reader->ReadRecPtr);
    } else if (kind == 'H') {
        /*
         * message_lsn is the END of the watermark record, which the next
         * record (maybe a commit) starts at: use the record's start, so that
         * (lsn, sequence) stays unique.
         */
        emit_import(d, chunk, ctx->reader->ReadRecPtr);
        chunk.emitted = true;
        chunk.high_end = ctx->reader->EndRecPtr;
    }
}

static void pgsink_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
                           XLogRecPtr message_lsn, bool transactional, const char *prefix,
                           Size message_size, const char *message)
{
    Decoder &d = decoder_of(ctx);
    in_change_context(d, [&] {
        cxx_entry(
            [&] { on_message(d, ctx, message_lsn, transactional, prefix, message_size, message); });
    });
}

static void pgsink_shutdown(LogicalDecodingContext *ctx)
{
    /* The Decoder itself is freed with ctx->context (free_decoder). */
    Decoder &d = decoder_of(ctx);
    if (d.guc_level > 0) {
        AtEOXact_GUC(true, d.guc_level);
        d.guc_level = 0;
    }
}

void _PG_output_plugin_init(OutputPluginCallbacks *cb)
{
    cb->startup_cb = pgsink_startup;
    cb->begin_cb = pgsink_begin;
    cb->change_cb = pgsink_change;
    cb->truncate_cb = pgsink_truncate;
    cb->commit_cb = pgsink_commit;
    cb->message_cb = pgsink_message;
    cb->shutdown_cb = pgsink_shutdown;
}
