/*
 * relation_cache.cpp: per-relation state of the output plugin.
 */
#include <algorithm>
#include <stdexcept>

#include "boundary/pg_boundary.h"
#include "changelog/avro_schema.h"
#include "changelog/json_writer.h"
#include "decoding/relation_cache.h"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_index.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/relcache.h"
#include "utils/syscache.h"
}

namespace pgsink
{

RelationCache::RelationCache() = default;

RelationCache::~RelationCache()
{
    for (auto &e : entries_)
        if (e.second->mcxt)
            MemoryContextDelete(e.second->mcxt);
}

Oid RelationCache::membership_relid()
{
    if (!OidIsValid(membership_relid_)) {
        Oid nsp = get_namespace_oid("pgsink", true);
        if (OidIsValid(nsp))
            membership_relid_ = get_relname_relid("captured_tables", nsp);
    }
    return membership_relid_;
}

bool RelationCache::is_drop_log(Oid relid)
{
    if (!OidIsValid(drop_log_relid_)) {
        Oid nsp = get_namespace_oid("pgsink", true);
        if (OidIsValid(nsp))
            drop_log_relid_ = get_relname_relid("dropped_tables", nsp);
    }
    return OidIsValid(relid) && relid == drop_log_relid_;
}

bool RelationCache::is_membership_table(Oid relid)
{
    return OidIsValid(relid) && relid == membership_relid();
}

void RelationCache::membership_changed()
{
    members_valid_ = false;
    for (auto &e : entries_)
        e.second->valid = false;
}

void RelationCache::invalidate(Oid relid)
{
    members_valid_ = false;
    if (!OidIsValid(relid) || relid == membership_relid_)
        membership_relid_ = InvalidOid;
    if (!OidIsValid(relid) || relid == drop_log_relid_)
        drop_log_relid_ = InvalidOid;
    for (auto &e : entries_) {
        RelationInfo &info = *e.second;
        if (!OidIsValid(relid) || info.relid == relid || info.target_relid == relid)
            info.valid = false;
    }
}

/* Read the relids in pgsink.captured_tables, as the historic snapshot sees them. */
void RelationCache::load_membership()
{
    members_.clear();
    Oid relid = membership_relid();
    if (OidIsValid(relid)) {
        Relation rel = table_open(relid, AccessShareLock);
        SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, nullptr, 0, nullptr);
        HeapTuple tup;
        while (HeapTupleIsValid(tup = systable_getnext(scan))) {
            bool isnull;
            Datum d = heap_getattr(tup, 1, RelationGetDescr(rel), &isnull);
            if (!isnull)
                members_.push_back(DatumGetObjectId(d));
        }
        systable_endscan(scan);
        table_close(rel, AccessShareLock);
    }
    std::sort(members_.begin(), members_.end());
    members_valid_ = true;
}

/* Key columns of rel, in key order: its replica identity index, else its primary key. */
static List *key_attnums(Relation rel)
{
    Oid index = RelationGetReplicaIndex(rel);
    if (!OidIsValid(index))
        index = RelationGetPrimaryKeyIndex(rel);
    if (!OidIsValid(index))
        return NIL;
    HeapTuple tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(index));
    if (!HeapTupleIsValid(tup))
        return NIL;
    Form_pg_index idx = (Form_pg_index)GETSTRUCT(tup);
    List *attnums = NIL;
    for (int i = 0; i < idx->indnkeyatts; i++)
        attnums = lappend_int(attnums, idx->indkey.values[i]);
    ReleaseSysCache(tup);
    return attnums;
}

void append_row_json(json::Out &out, const RelationInfo &info, const Datum *values,
                     const bool *nulls, bool key_only, const bool *omit,
                     const std::string_view *raw)
{
    out.put('{');
    bool first = true;
    for (const ColumnInfo &col : info.columns) {
        int i = col.attnum - 1;
        if ((key_only && !col.is_key) || (omit && omit[i]))
            continue;
        if (!first)
            out.put(',');
        first = false;
        out.append(col.json_key);
        if (raw && !raw[i].empty())
            out.append(raw[i]);
        else if (nulls[i])
            out.literal("null");
        else
            encode_value(out, col.encoder, values[i]);
    }
    out.put('}');
}

void append_row_json(std::string &out, const RelationInfo &info, const Datum *values,
                     const bool *nulls, bool key_only)
{
    /* Static, not on the stack for its size; Out owns nothing, so an ERROR may longjmp past it. */
    static char storage[16 * 1024];
    json::Out o(storage);
    o.begin(out);
    append_row_json(o, info, values, nulls, key_only);
    o.flush();
}

/* The end of the JSON value starting at p (a string, number, literal, array or object). */
static size_t skip_json_value(std::string_view s, size_t p)
{
    int depth = 0;
    bool in_string = false;
    for (; p < s.size(); p++) {
        char c = s[p];
        if (in_string) {
            if (c == '\\')
                p++;
            else if (c == '"') {
                in_string = false;
                if (depth == 0)
                    return p + 1;
            }
            continue;
        }
        if (c == '"')
            in_string = true;
        else if (c == '[' || c == '{')
            depth++;
        else if (c == ']' || c == '}') {
            if (depth == 0)
                return p;
            if (--depth == 0)
                return p + 1;
        } else if (c == ',' && depth == 0)
            return p;
    }
    return p;
}

bool split_row_json(std::string_view row, const RelationInfo &info,
                    std::string_view *values_by_attnum)
{
    size_t p = 1; /* after '{' */
    for (const ColumnInfo &col : info.columns) {
        if (p > row.size() || row.compare(p, col.json_key.size(), col.json_key) != 0)
            return false;
        p += col.json_key.size();
        size_t end = skip_json_value(row, p);
        values_by_attnum[col.attnum - 1] = row.substr(p, end - p);
        p = end + 1; /* past ',' or '}' */
    }
    return true;
}

/*
 * Fill the parts of info that describe the reported relation: its name, key,
 * columns with their encoders, and Avro schema. desc is target's descriptor
 * (a copy that lives in info.mcxt). Shared by decoding and imports, so both
 * describe a table identically.
 */
void describe_relation(RelationInfo &info, Relation target, TupleDesc desc)
{
    info.columns.clear();
    /* Names in UTF-8 whatever the database's encoding, as every value is. */
    std::string nspname =
        pg_call([&] { return server_to_utf8(get_namespace_name(RelationGetNamespace(target))); });
    std::string relname = pg_call([&] { return server_to_utf8(RelationGetRelationName(target)); });
    info.name_json.clear();
    info.name_json.append("\"namespace\":");
    json::append_string(info.name_json, nspname);
    info.name_json.append(",\"name\":");
    json::append_string(info.name_json, relname);
    info.replident = target->rd_rel->relreplident;

    List *keys = pg_call([&] { return key_attnums(target); });
    RelationSchema schema;
    schema.nspname = nspname;
    schema.relname = relname;
    for (int i = 0; i < desc->natts; i++) {
        Form_pg_attribute att = TupleDescAttr(desc, i);
        if (att->attisdropped)
            continue;
        ColumnInfo &col = info.columns.emplace_back();
        col.name = pg_call([&] { return server_to_utf8(NameStr(att->attname)); });
        col.json_key.clear();
        json::append_string(col.json_key, col.name);
        col.json_key.push_back(':');
        col.attnum = att->attnum;
        col.is_key = list_member_int(keys, att->attnum);
        col.is_varlena = att->attlen == -1;
        pg_call([&] { init_value_encoder(col.encoder, att->atttypid, info.mcxt); });
        std::string pg_type = pg_call([&] {
            return server_to_utf8(format_type_with_typemod(att->atttypid, att->atttypmod));
        });
        schema.columns.push_back({col.name, pg_type, avro_type_of(col.encoder)});
    }
    info.key_attnums.clear();
    ListCell *lc;
    foreach (lc, keys) {
        info.key_attnums.push_back(static_cast<AttrNumber>(lfirst_int(lc)));
        schema.key.push_back(pg_call([&] {
            return server_to_utf8(NameStr(TupleDescAttr(desc, lfirst_int(lc) - 1)->attname));
        }));
    }
    pg_call([&] { list_free(keys); });
    info.schema_json = build_avro_schema(schema);
}

void RelationCache::build(RelationInfo &info, Relation rel)
{
    /*
     * This frame owns C++ objects (strings, the schema), so every PostgreSQL
     * call that can ERROR goes through pg_call().
     */
    if (!members_valid_)
        pg_call([&] { load_membership(); });

    if (info.mcxt)
        MemoryContextDelete(info.mcxt);
    info.mcxt = nullptr;
    info.columns.clear();
    info.to_root = nullptr;
    info.relid = RelationGetRelid(rel);
    info.target_relid = InvalidOid;
    info.schema_checked = false;

    auto is_member = [&](Oid relid) {
        return std::binary_search(members_.begin(), members_.end(), relid);
    };
    /* A partition is reported under its topmost captured ancestor, else its own name. */
    if (rel->rd_rel->relispartition) {
        List *ancestors = pg_call([&] { return get_partition_ancestors(info.relid); });
        ListCell *lc;
        foreach (lc, ancestors)
            if (is_member(lfirst_oid(lc)))
                info.target_relid = lfirst_oid(lc);
        pg_call([&] { list_free(ancestors); });
    }
    if (!OidIsValid(info.target_relid) && is_member(info.relid))
        info.target_relid = info.relid;
    info.captured = OidIsValid(info.target_relid);
    if (!info.captured) {
        info.valid = true; /* no memory context: a relation not captured costs a few bytes */
        return;
    }
    info.mcxt = pg_call([] {
        return AllocSetContextCreate(TopMemoryContext, "pgsink relation", ALLOCSET_SMALL_SIZES);
    });

    Relation target = info.target_relid == info.relid
                          ? rel
                          : pg_call([&] { return RelationIdGetRelation(info.target_relid); });
    if (target == nullptr)
        throw std::runtime_error("pgsink: could not open relation " +
                                 std::to_string(info.target_relid));
    TupleDesc desc = pg_call([&] {
        MemoryContext old = MemoryContextSwitchTo(info.mcxt);
        TupleDesc copy = CreateTupleDescCopy(RelationGetDescr(target));
        if (target != rel)
            info.to_root = convert_tuples_by_name(CreateTupleDescCopy(RelationGetDescr(rel)), copy);
        MemoryContextSwitchTo(old);
        return copy;
    });

    describe_relation(info, target, desc);
    if (target != rel)
        pg_call([&] { RelationClose(target); });
    info.valid = true;
}

bool RelationCache::announce_schema(Oid target_relid, const std::string &schema_json)
{
    std::string &sent = sent_schemas_[target_relid];
    if (sent == schema_json)
        return false;
    sent = schema_json;
    return true;
}

/*
 * Forget what is cheap to learn again: relations that are not captured, and
 * entries already invalidated (dropped tables among them). Only between
 * changes, when no reference to an entry is held.
 */
void RelationCache::sweep()
{
    for (auto it = entries_.begin(); it != entries_.end();) {
        RelationInfo &info = *it->second;
        if (info.valid && info.captured) {
            ++it;
            continue;
        }
        if (info.mcxt)
            MemoryContextDelete(info.mcxt);
        it = entries_.erase(it);
    }
    last_ = nullptr;
}

RelationInfo &RelationCache::get(Relation rel)
{
    Oid relid = RelationGetRelid(rel);
    if (last_ != nullptr && last_relid_ == relid && last_->valid)
        return *last_;
    auto it = entries_.find(relid);
    if (it == entries_.end()) {
        /* Every relation ever decoded must not stay here forever. */
        if (entries_.size() >= kMaxEntries)
            sweep();
        it = entries_.emplace(relid, std::make_unique<RelationInfo>()).first;
    }
    RelationInfo &info = *it->second;
    if (!info.valid)
        build(info, rel);
    last_ = &info;
    last_relid_ = relid;
    return info;
}

bool RelationCache::schema_needs_sending(RelationInfo &info)
{
    if (info.schema_checked)
        return false;
    info.schema_checked = true;
    return announce_schema(info.target_relid, info.schema_json);
}

} // namespace pgsink
