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
#include <string_view>
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

/* This process's secret for its watermarks (see importer.cpp's write_watermark()). */
uint64 watermark_token();

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

    /*
     * Rows in key order, packed into two buffers (one allocation each, kept
     * from chunk to chunk): row i's JSON is row_data[row_ends[i - 1],
     * row_ends[i]), its key JSON (as the decoder writes key-only rows) is
     * key_data[key_ends[i - 1], key_ends[i]).
     */
    std::string row_data;
    std::vector<size_t> row_ends;
    std::string key_data;
    std::vector<size_t> key_ends;
    std::vector<bool> dropped;
    /* Key -> row, built at the first lookup: most chunks meet no concurrent change. */
    std::unordered_map<std::string_view, size_t> index;

    std::vector<std::string> last_key; /* cursor after this chunk: key values as text */
    std::string cursor_key;            /* what the cursor's values are (importer.cpp) */
    bool last_chunk = false; /* fewer rows than asked, not cut short by size: the table is done */
    int chunk_rows = 0;      /* the limit this chunk was read with */
    int next_chunk_rows = 0; /* adapted to the time budget */

    /*
     * pgsink.resync(): this chunk opens the resync (it starts from the first
     * row; the decoder writes "resync_start" at its low watermark), and/or
     * closes it (its last: "resync_end" after its rows, with the position
     * the resync opened at).
     */
    bool resync_open = false;
    bool resync_close = false;
    XLogRecPtr resync_since = InvalidXLogRecPtr; /* the job's, when this chunk does not open it */
    XLogRecPtr low_lsn = InvalidXLogRecPtr;      /* end of L, as written */
    /* Where the resync rule counts from (resync_open): L's start, or resync_floor if earlier. */
    XLogRecPtr resync_open_lsn = InvalidXLogRecPtr;
    /* The earliest commit before L of a transaction the opening chunk's snapshot missed. */
    XLogRecPtr resync_floor = InvalidXLogRecPtr;

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

    size_t size() const { return row_ends.size(); }
    std::string_view row(size_t i) const { return slice(row_data, row_ends, i); }
    std::string_view key(size_t i) const { return slice(key_data, key_ends, i); }

    /* Append a row read by the importer: its JSON was appended to row_data and key_data. */
    void row_added()
    {
        row_ends.push_back(row_data.size());
        key_ends.push_back(key_data.size());
        dropped.push_back(false);
    }

    /* Drop the row with this key; returns its index, or -1 if it was not (or no longer) here. */
    long drop_key(std::string_view k)
    {
        if (index.empty() && size() > 0) {
            std::unordered_map<std::string_view, size_t> built; /* whole, or not at all */
            built.reserve(size());
            for (size_t i = 0; i < size(); i++)
                built.emplace(key(i), i);
            index = std::move(built);
        }
        auto it = index.find(k);
        if (it == index.end() || dropped[it->second])
            return -1;
        dropped[it->second] = true;
        return static_cast<long>(it->second);
    }

    void drop_all() { std::fill(dropped.begin(), dropped.end(), true); }

    /*
     * Forget the job and the rows, keeping the buffers' memory for the next
     * chunk (no page faults, no reallocation while rows are appended), unless
     * a chunk of very large rows made them huge.
     */
    void recycle()
    {
        constexpr size_t kKeepBytes = 64 << 20;
        ImportChunk fresh;
        if (row_data.capacity() <= kKeepBytes && key_data.capacity() <= kKeepBytes) {
            fresh.row_data.swap(row_data);
            fresh.key_data.swap(key_data);
            fresh.row_ends.swap(row_ends);
            fresh.key_ends.swap(key_ends);
            fresh.dropped.swap(dropped);
            fresh.row_data.clear();
            fresh.key_data.clear();
            fresh.row_ends.clear();
            fresh.key_ends.clear();
            fresh.dropped.clear();
        }
        *this = std::move(fresh);
    }

  private:
    static std::string_view slice(const std::string &data, const std::vector<size_t> &ends,
                                  size_t i)
    {
        size_t begin = i == 0 ? 0 : ends[i - 1];
        return std::string_view(data).substr(begin, ends[i] - begin);
    }
};

/* The chunk awaiting its high watermark, set by the stream worker; null if none. */
extern ImportChunk *active_import;

} // namespace pgsink
