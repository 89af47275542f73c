/*
 * import_chunk.h: one chunk of an import, between its read and its delivery.
 *
 * The stream worker reads a chunk between a low (L) and a high (H) watermark
 * written to WAL. The decoder then drops every chunk row whose key is changed
 * by a transaction that commits before H and that the chunk's snapshot did
 * not see (committed after L, or still in progress when the chunk was read),
 * because the stream carries the newer version; at H it emits the remaining
 * rows as "import" entries. So an imported row never overwrites a newer
 * change and a row deleted during the import never reappears.
 */
#pragma once

#include <algorithm>
#include <string>
#include <unordered_map>
#include <vector>

extern "C" {
#include "postgres.h"
#include "access/transam.h"
#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
}

namespace pgsink
{

constexpr const char *kImportMessagePrefix = "pgsink-import";

struct ImportChunk {
    int64 job_id = 0;
    uint64 chunk_no = 0; /* matches the watermark messages to this chunk */
    Oid relid = InvalidOid;
    std::string name_json;   /* "\"namespace\":...,\"name\":..." */
    std::string schema_json; /* Avro schema of the table when read */
    TimestampTz read_at = 0;

    /* The snapshot the chunk was read with. */
    TransactionId xmin = InvalidTransactionId;
    TransactionId xmax = InvalidTransactionId;
    std::vector<TransactionId> xip; /* sorted */

    /* Rows in key order: key JSON (as the decoder writes key-only rows) and row JSON. */
    std::vector<std::string> keys;
    std::vector<std::string> rows;
    std::vector<bool> dropped;
    std::unordered_map<std::string, size_t> index;
    uint64 dropped_rows = 0;

    std::vector<std::string> last_key; /* cursor after this chunk: key values as text */
    bool last_chunk = false;           /* fewer rows than asked: the table is done */
    int chunk_rows = 0;                /* the limit this chunk was read with */
    int next_chunk_rows = 0;           /* adapted to the time budget */

    bool window_open = false;                /* L decoded */
    bool emitted = false;                    /* H decoded, rows written */
    XLogRecPtr high_end = InvalidXLogRecPtr; /* end of H: durable once confirmed past */
    uint64 emitted_rows = 0;

    /* Did the chunk's snapshot see the (committed) top-level transaction xid? */
    bool visible(TransactionId xid) const
    {
        if (TransactionIdPrecedes(xid, xmin))
            return true;
        if (!TransactionIdPrecedes(xid, xmax))
            return false;
        return !std::binary_search(xip.begin(), xip.end(), xid);
    }

    /* Drop the row with this key; returns its index, or -1 if it was not (or no longer) here. */
    long drop_key(const std::string &key)
    {
        auto it = index.find(key);
        if (it == index.end() || dropped[it->second])
            return -1;
        dropped[it->second] = true;
        dropped_rows++;
        return static_cast<long>(it->second);
    }

    void drop_all()
    {
        for (size_t i = 0; i < dropped.size(); i++)
            if (!dropped[i]) {
                dropped[i] = true;
                dropped_rows++;
            }
    }
};

/* The chunk awaiting its high watermark, set by the stream worker; null if none. */
extern ImportChunk *active_import;

} // namespace pgsink
