/*
 * spool_files.h: the spool's files, shared by its writer (the stream
 * worker), its readers (delivery workers, pgsink.rewind_sink()) and the SQL
 * views.
 *
 * The spool is one ordered changelog, exactly the lines the file sink
 * writes, addressed by offset: the number of bytes written to the spool
 * since it began. It is cut into segment files, each named by the offset of
 * its first byte (16 hex digits):
 *
 *   <offset>.jsonl    the entries, whole transactions, one JSON object a line
 *   <offset>.idx      fixed-size, checksummed records (IndexRecord):
 *                     round ends (what is durable: the stream worker fsyncs
 *                     the segment, then appends a round end and fsyncs the
 *                     index, and only then confirms the slot), and every
 *                     ~256 kB a transaction end (lsn, commit time), so a
 *                     reader seeks to an lsn or a time without scanning
 *   <offset>.schemas  the Schema entries in effect where the segment starts
 *                     (the latest one of each table), for a sink that starts
 *                     or is rewound there
 *   identity          a random 64-bit id, made once: cursors carry it, so a
 *                     spool wiped and made anew is never read at an old
 *                     cursor
 *   sinks/<name>.cursor  each sink's cursor (spool/sink_cursor.h)
 *
 * Everything after a segment's last round end is cut at start-up (the
 * transactions there were not confirmed: they are decoded again).
 */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pgsink::spool
{

enum RecordKind : uint32_t {
    /* Durable up to offset; every transaction committed before lsn is in the spool. */
    kRoundEnd = 1,
    /* A transaction's entries end at offset; lsn and commit_time are its own. */
    kTxnEnd = 2,
};

struct IndexRecord {
    uint64_t offset;  /* global spool offset */
    uint64_t entries; /* entries (lines) before offset since the spool began */
    uint64_t lsn;
    int64_t commit_time; /* PostgreSQL TimestampTz; round ends: of the newest transaction */
    uint32_t kind;
    uint32_t crc; /* CRC-32C of the bytes before it */
};
static_assert(sizeof(IndexRecord) == 40, "IndexRecord is written to disk as is");

struct Segment {
    uint64_t start = 0; /* offset of its first byte */
    uint64_t size = 0;  /* bytes in its .jsonl file */
    int64_t mtime = 0;  /* last write, Unix seconds */
};

/* The spool directory (pgsink.spool_directory), relative to the data directory or absolute. */
std::string directory();
std::string segment_path(const std::string &dir, uint64_t start);
std::string index_path(const std::string &dir, uint64_t start);
std::string schemas_path(const std::string &dir, uint64_t start);
std::string cursor_path(const std::string &dir, const std::string &sink);

/* The segments in dir, by offset; empty if there is none (or no directory). */
std::vector<Segment> list_segments(const std::string &dir);

/* A record, its checksum set. */
IndexRecord make_record(RecordKind kind, uint64_t offset, uint64_t entries, uint64_t lsn,
                        int64_t commit_time);
bool intact(const IndexRecord &r);
/* The valid records of an index file, up to the first torn or corrupt one. */
std::vector<IndexRecord> read_index(const std::string &path);

/* The spool's identity (0 if the directory or its identity file is missing). */
uint64_t read_identity(const std::string &dir);

/* fsync a directory (a new or removed file must survive a crash). Throws on failure. */
void sync_directory(const std::string &dir);
/*
 * The text of errno value err, safe in any thread (the spool's write thread
 * makes its own error messages; PostgreSQL's strerror() uses one static
 * buffer).
 */
std::string errno_text(int err);

} // namespace pgsink::spool
