/*
 * relation_cache.h: what the output plugin knows about each relation it
 * sees: whether it is captured, under which name (a partition is reported as
 * its captured root), its columns' encoders, key and Avro schema.
 *
 * Entries are built with the historic snapshot of the transaction being
 * decoded, so membership and layout are those at that point of the WAL, and
 * are dropped on relcache invalidation (ALTER TABLE, add_table/remove_table).
 */
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "decoding/value_encoder.h"

extern "C" {
#include "postgres.h"
#include "access/attmap.h"
#include "access/tupconvert.h"
#include "utils/rel.h"
}

namespace pgsink
{

struct ColumnInfo {
    std::string json_key; /* "\"name\":", pre-escaped */
    std::string name;
    AttrNumber attnum; /* in the reported (root) relation's descriptor */
    bool is_key;
    bool is_varlena;
    ValueEncoder encoder;
};

struct RelationInfo {
    Oid relid = InvalidOid;
    bool valid = false;
    bool captured = false;
    Oid target_relid = InvalidOid;       /* the relation reported: itself or a partition root */
    std::string name_json;               /* "\"namespace\":\"public\",\"name\":\"t\"" */
    std::vector<ColumnInfo> columns;     /* non-dropped columns of the target */
    std::vector<AttrNumber> key_attnums; /* key columns in key order (empty: no key) */
    char replident = 'd';
    std::string schema_json;               /* Avro schema of the target */
    bool schema_checked = false;           /* compared with the last schema sent */
    TupleConversionMap *to_root = nullptr; /* partition -> root rows, or null */
    MemoryContext mcxt = nullptr;          /* FmgrInfo state and the conversion map */
};

/*
 * A row as a JSON object: values[attnum - 1] / nulls[attnum - 1] for each
 * column of info; key_only: the key columns only; omit (optional, indexed
 * the same way): columns to leave out. The one encoder of rows, so that the
 * decoder's keys and the importer's match byte for byte.
 */
void append_row_json(json::Out &out, const RelationInfo &info, const Datum *values,
                     const bool *nulls, bool key_only, const bool *omit = nullptr,
                     const std::string_view *raw = nullptr);
/* The same, appended to a std::string (the importer's chunks). */
void append_row_json(std::string &out, const RelationInfo &info, const Datum *values,
                     const bool *nulls, bool key_only);

/*
 * The JSON value of each column in a row written by append_row_json() for
 * info (all columns), into values_by_attnum[attnum - 1]. False if the row
 * does not have info's columns in order (the table changed shape).
 */
bool split_row_json(std::string_view row, const RelationInfo &info,
                    std::string_view *values_by_attnum);

/* Describe target (name, key, columns, schema) into info; see relation_cache.cpp. */
void describe_relation(RelationInfo &info, Relation target, TupleDesc desc);

class RelationCache
{
  public:
    RelationCache();
    ~RelationCache();
    RelationCache(const RelationCache &) = delete;
    RelationCache &operator=(const RelationCache &) = delete;

    /* The info for a relation being decoded, (re)built if invalid. */
    RelationInfo &get(Relation rel);
    /* Is relid pgsink.captured_tables (whose changes change membership)? */
    bool is_membership_table(Oid relid);
    /* Is relid pgsink.dropped_tables (whose inserts say a captured table was dropped)? */
    bool is_drop_log(Oid relid);
    /* Membership changed: re-read it before the next change. */
    void membership_changed();
    /* Relcache invalidation of relid (InvalidOid: all). */
    void invalidate(Oid relid);
    /*
     * Has target's current schema not been sent yet? Records it as sent.
     */
    bool schema_needs_sending(RelationInfo &info);
    /* Has this schema of target_relid not been sent yet? Records it as sent. */
    bool announce_schema(Oid target_relid, const std::string &schema_json);

    /* Past this many entries, get() forgets the ones not captured (see sweep()). */
    static constexpr size_t kMaxEntries = 1024;

  private:
    void build(RelationInfo &info, Relation rel);
    void sweep();
    void load_membership();
    Oid membership_relid();

    std::unordered_map<Oid, std::unique_ptr<RelationInfo>> entries_;
    /* The entry get() returned last (changes come in runs on one relation), or null. */
    RelationInfo *last_ = nullptr;
    Oid last_relid_ = InvalidOid;
    std::unordered_map<Oid, std::string> sent_schemas_; /* target relid -> schema JSON */
    std::vector<Oid> members_;                          /* sorted relids in captured_tables */
    bool members_valid_ = false;
    Oid membership_relid_ = InvalidOid;
    Oid drop_log_relid_ = InvalidOid;
};

} // namespace pgsink
