/*
 * spool_writer.cpp: see spool_writer.h and, for the layout, spool_files.h.
 *
 * Ordering that makes the spool exactly-once toward the slot: entries are
 * written to the segment; at the end of a round the segment is fdatasynced,
 * then a round end (offset, lsn decoded up to) is appended to the index and
 * the index fdatasynced; only then is the new end published to delivery
 * workers and the slot confirmed. The writes and these fsyncs are made in
 * order by one thread (write_behind.h), so decoding goes on while a round
 * is made durable; a new segment is made by the same thread, after the
 * round that fills the one before. At start-up everything after the last
 * round end is cut, and decoding starts at that round end's lsn (or the
 * slot's, if later): no transaction is lost or written twice, and offsets
 * that sinks' cursors point at never change.
 */
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "boundary/pg_boundary.h"
#include "core/config.h"
#include "core/shared_state.h"
#include "spool/spool_reader.h"
#include "spool/spool_writer.h"
#include "changelog/entry_head.h"

extern "C" {
#include "port.h"
}

namespace pgsink::spool
{

/* Delivered files are renamed so before their removal (see remove_delivered()). */
static constexpr const char *kRemovedSuffix = ".removed";

/*
 * Files a removal left behind when the stream worker stopped, and
 * temporary files of a new segment's schemas that a crash interrupted.
 */
static void remove_leftovers(const std::string &dir)
{
    DIR *d = opendir(dir.c_str());
    if (d == nullptr)
        return;
    size_t suffix = strlen(kRemovedSuffix);
    while (struct dirent *e = readdir(d)) {
        size_t len = strlen(e->d_name);
        if ((len > suffix && strcmp(e->d_name + len - suffix, kRemovedSuffix) == 0) ||
            (len > 4 && strcmp(e->d_name + len - 4, ".tmp") == 0))
            (void)unlink((dir + "/" + e->d_name).c_str());
    }
    closedir(d);
}

/* A transaction end is indexed at most once per this many bytes. */
static constexpr uint64_t kIndexEvery = 256 * 1024;

Writer::~Writer()
{
    close();
}

void Writer::close()
{
    io_.drain(); /* a write that failed: cut at the next open() */
    if (seg_fd_ >= 0)
        ::close(seg_fd_);
    if (idx_fd_ >= 0)
        ::close(idx_fd_);
    seg_fd_ = idx_fd_ = -1;
    pending_.clear();
    rounds_.clear(); /* durable or not: open() finds out from the index */
}

[[noreturn]] static void fail(const std::string &what, const std::string &path, int err)
{
    throw Error(err == ENOSPC ? ERRCODE_DISK_FULL : ERRCODE_IO_ERROR,
                "could not " + what + " spool file \"" + path + "\": " + errno_text(err),
                err == ENOSPC ? "Free disk space on the spool's file system (never by removing "
                                "spool files), or lower pgsink.spool_max_size below what it can "
                                "hold; the stream worker starts again by itself."
                              : "");
}

static void write_all(int fd, const void *data, size_t len, const std::string &path)
{
    const char *p = static_cast<const char *>(data);
    while (len > 0) {
        ssize_t n = ::write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fail("write", path, errno);
        }
        p += n;
        len -= static_cast<size_t>(n);
    }
}

/* Write a small file whole and durably: a temporary file, fsynced, renamed over path. */
static void write_file_durably(const std::string &dir, const std::string &path,
                               const std::string &data)
{
    std::string tmp = path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        fail("create", tmp, errno);
    try {
        write_all(fd, data.data(), data.size(), tmp);
    } catch (...) {
        ::close(fd);
        throw;
    }
    int rc = fdatasync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0)
        fail("fsync", tmp, err);
    if (rename(tmp.c_str(), path.c_str()) != 0)
        fail("rename", tmp, errno);
    sync_directory(dir);
}

/* A random identity for a new spool. */
static uint64_t new_identity()
{
    uint64_t id = 0;
    while (id == 0)
        if (!pg_strong_random(&id, sizeof(id)))
            throw Error(ERRCODE_INTERNAL_ERROR, "could not generate a random spool identity");
    return id;
}

uint64_t Writer::segment_bytes()
{
    return static_cast<uint64_t>(guc_spool_segment_size_mb) << 20;
}

/* A new segment's two files, empty: made durable by make_segment_durable(). */
void Writer::open_segment_files(uint64_t start, int *seg_fd, int *idx_fd)
{
    std::string seg = segment_path(dir_, start), idx = index_path(dir_, start);
    int sfd = ::open(seg.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (sfd < 0)
        fail("create", seg, errno);
    int ifd = ::open(idx.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (ifd < 0) {
        int err = errno;
        ::close(sfd);
        fail("create", idx, err);
    }
    *seg_fd = sfd;
    *idx_fd = ifd;
}

/*
 * Reserve a segment's disk blocks before it is written, without changing
 * its size (readers and start-up go by the size). Appends then fill blocks
 * already allocated: the file system's per-page work of allocating at
 * write-out (ext4's delayed allocation, quota) is done once per segment,
 * which takes about a third of the writes' system time (perf). Best effort:
 * a file system without fallocate() only loses the gain; the writes report a
 * full disk themselves.
 *
 * A reservation is space pgsink.spool_max_size does not count, taken before
 * it is needed, in a file system the server's own files often share: none
 * is made unless the file system keeps four times as much free, and one
 * that failed (ext4 keeps the blocks it reserved before it ran out of
 * space) is given back by truncating the file to its size, which frees the
 * blocks past it.
 */
static void preallocate(int seg_fd, uint64_t size, uint64_t bytes)
{
#ifdef FALLOC_FL_KEEP_SIZE
    struct statvfs vfs;
    if (size >= bytes || fstatvfs(seg_fd, &vfs) != 0 ||
        static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize / 4 < bytes)
        return;
    if (fallocate(seg_fd, FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(bytes)) != 0 &&
        ftruncate(seg_fd, static_cast<off_t>(size)) != 0) {
        /* Kept, then: only space, freed with the segment. */
    }
#else
    (void)seg_fd;
    (void)size;
    (void)bytes;
#endif
}

/*
 * A new segment's first record (where it starts, and what is before it),
 * written and fsynced with both files and the directory. Until then the
 * segment is empty and has no record: start-up removes it.
 */
static void make_segment_durable(const std::string &dir, uint64_t start, int seg_fd, int idx_fd,
                                 const IndexRecord &first, uint64_t segment_bytes)
{
    preallocate(seg_fd, 0, segment_bytes); /* a new segment: empty */
    write_all(idx_fd, &first, sizeof(first), index_path(dir, start));
    if (fdatasync(seg_fd) != 0)
        fail("fsync", segment_path(dir, start), errno);
    if (fdatasync(idx_fd) != 0)
        fail("fsync", index_path(dir, start), errno);
    sync_directory(dir);
}

/*
 * A round made durable: the segment's data, then the round end (after the
 * transaction ends before it) in the index. Made by the writes' thread.
 */
static void make_round_durable(const std::string &dir, uint64_t seg_start, int seg_fd, int idx_fd,
                               const std::vector<IndexRecord> &records)
{
    std::string seg = segment_path(dir, seg_start), idx = index_path(dir, seg_start);
    if (fdatasync(seg_fd) != 0)
        fail("fsync", seg, errno);
    off_t idx_size = lseek(idx_fd, 0, SEEK_END);
    write_all(idx_fd, records.data(), records.size() * sizeof(IndexRecord), idx);
    if (fdatasync(idx_fd) != 0) {
        /*
         * The round end may be in the page cache and not on disk: take it
         * out again, or a later start would trust it.
         */
        int err = errno;
        if (idx_size < 0 || ftruncate(idx_fd, idx_size) != 0 || fdatasync(idx_fd) != 0)
            throw Error(ERRCODE_IO_ERROR,
                        "could not fsync spool file \"" + idx + "\": " + errno_text(err) +
                            "; nor take its last round end out again",
                        "If the server crashes before the spool's next start, the spool may "
                        "hold a round that is not on disk.");
        fail("fsync", idx, err);
    }
}

/* A new segment, made at once (a new spool, or the one being written rolled while idle). */
void Writer::create_segment(uint64_t start)
{
    int sfd, ifd;
    open_segment_files(start, &sfd, &ifd);
    IndexRecord r =
        make_record(kRoundEnd, start, durable_entries_, durable_lsn_, durable_commit_time_);
    close();
    seg_fd_ = sfd;
    idx_fd_ = ifd;
    make_segment_durable(dir_, start, seg_fd_, idx_fd_, r, segment_bytes());
    seg_start_ = start;
    indexed_at_ = start;
    segments_++;
}

/* The schemas in effect at the durable end, from the segment's own file and what follows. */
static std::map<std::string, std::string> schemas_in_effect(const std::string &dir, uint64_t offset)
{
    std::map<std::string, std::string> m;
    Reader reader(dir);
    std::string text = reader.schemas_at(offset);
    std::string table;
    for (size_t at = 0; at < text.size();) {
        size_t nl = text.find('\n', at);
        if (schema_line_table(text.data() + at, nl - at, &table))
            m[table] = text.substr(at, nl - at);
        at = nl + 1;
    }
    return m;
}

uint64_t Writer::open(uint64_t slot_confirmed)
{
    close();
    dir_ = directory();
    if (mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST)
        fail("create directory for", dir_, errno);
    std::string sinks = dir_ + "/sinks";
    if (mkdir(sinks.c_str(), 0700) != 0 && errno != EEXIST)
        fail("create directory for", sinks, errno);

    /*
     * Opened again in the same process (after an error): the write thread
     * is stopped first, so that one that died (its writes dropped) is
     * started anew rather than kept dead with its error cleared.
     */
    io_.stop();
    io_.clear_error();
    remove_leftovers(dir_);
    std::vector<Segment> segments = list_segments(dir_);
    id_ = read_identity(dir_);
    if (id_ == 0) {
        if (!segments.empty())
            throw Error(ERRCODE_DATA_CORRUPTED,
                        "the spool directory \"" + dir_ + "\" has segments but no identity file",
                        "It is damaged: move it away and restart; pgsink then starts a new "
                        "spool, and each sink needs pgsink.rewind_sink() and re-imports.");
        id_ = new_identity();
        char text[32];
        snprintf(text, sizeof(text), "%016llX\n", static_cast<unsigned long long>(id_));
        write_file_durably(dir_, dir_ + "/identity", text);
    }

    /*
     * A segment whose making a crash (or a full disk) interrupted has no
     * first record, and no data: drop it. One with data but no valid first
     * record is damaged, and said so below.
     */
    while (!segments.empty() && segments.back().size == 0) {
        std::vector<IndexRecord> records = read_index(index_path(dir_, segments.back().start));
        if (!records.empty() && records.front().offset == segments.back().start)
            break;
        unlink(index_path(dir_, segments.back().start).c_str());
        unlink(schemas_path(dir_, segments.back().start).c_str());
        if (unlink(segment_path(dir_, segments.back().start).c_str()) != 0)
            fail("remove", segment_path(dir_, segments.back().start), errno);
        segments.pop_back();
        sync_directory(dir_);
    }

    pending_.clear();
    schemas_.clear();
    if (segments.empty()) {
        durable_end_ = end_ = submitted_end_ = 0;
        durable_entries_ = entries_ = 0;
        durable_lsn_ = slot_confirmed;
        last_commit_time_ = durable_commit_time_ = 0;
        segments_ = 0;
        create_segment(0);
        oldest_ = 0;
        bytes_ = 0;
        publish();
        return durable_lsn_;
    }

    /* Recover the last segment: cut everything after its last round end. */
    const Segment &last = segments.back();
    std::string seg = segment_path(dir_, last.start), idx = index_path(dir_, last.start);
    std::vector<IndexRecord> records = read_index(idx);
    auto round = std::find_if(records.rbegin(), records.rend(),
                              [](const IndexRecord &r) { return r.kind == kRoundEnd; });
    if (round == records.rend() || round->offset < last.start ||
        round->offset > last.start + last.size)
        throw Error(ERRCODE_DATA_CORRUPTED,
                    "spool segment \"" + seg + "\" has no valid round end in its index",
                    "The spool is damaged: move pgsink.spool_directory away and restart; each "
                    "sink then needs pgsink.rewind_sink() and re-imports.");
    const IndexRecord r = *round;
    /* Keep every record up to that round end; the torn or unsynced rest goes. */
    size_t keep = static_cast<size_t>(records.rend() - round);
    seg_fd_ = ::open(seg.c_str(), O_WRONLY | O_CLOEXEC);
    if (seg_fd_ < 0)
        fail("open", seg, errno);
    idx_fd_ = ::open(idx.c_str(), O_WRONLY | O_CLOEXEC);
    if (idx_fd_ < 0)
        fail("open", idx, errno);
    if (ftruncate(seg_fd_, static_cast<off_t>(r.offset - last.start)) != 0)
        fail("truncate", seg, errno);
    if (ftruncate(idx_fd_, static_cast<off_t>(keep * sizeof(IndexRecord))) != 0)
        fail("truncate", idx, errno);
    if (fsync(seg_fd_) != 0)
        fail("fsync", seg, errno);
    if (fsync(idx_fd_) != 0)
        fail("fsync", idx, errno);
    /* The cut took the reserved blocks too. */
    preallocate(seg_fd_, r.offset - last.start, segment_bytes());
    if (lseek(seg_fd_, 0, SEEK_END) < 0 || lseek(idx_fd_, 0, SEEK_END) < 0)
        fail("seek in", seg, errno);

    seg_start_ = last.start;
    end_ = durable_end_ = submitted_end_ = r.offset;
    entries_ = durable_entries_ = r.entries;
    durable_lsn_ = r.lsn;
    last_commit_time_ = durable_commit_time_ = r.commit_time;
    indexed_at_ = r.offset;
    for (size_t i = 0; i < keep; i++)
        if (records[i].kind == kTxnEnd)
            indexed_at_ = std::max(indexed_at_, records[i].offset);
    oldest_ = segments.front().start;
    segments_ = static_cast<int>(segments.size());
    bytes_ = 0;
    for (const Segment &s : segments)
        bytes_ += s.size;
    bytes_ -= last.size - (r.offset - last.start);
    schemas_ = schemas_in_effect(dir_, durable_end_);
    publish();
    return std::max(durable_lsn_, slot_confirmed);
}

void Writer::note_schema(const char *line, size_t len)
{
    std::string table;
    if (schema_line_table(line, len, &table))
        schemas_[table].assign(line, len);
}

/* A write the thread failed fails the worker, in the worker's thread. */
void Writer::check_writes()
{
    io_.rethrow_failure(); /* a round's fsync or a new segment's making */
    if (int err = io_.error())
        fail("write", segment_path(dir_, seg_start_), err);
}

void Writer::write(std::string &data, uint64_t entries)
{
    check_writes();
    size_t len = data.size();
    io_.submit(seg_fd_, end_ - seg_start_, data);
    end_ += len;
    entries_ += entries;
    bytes_ += len;
}

void Writer::transaction_end(uint64_t lsn, int64_t commit_time, size_t pending, uint64_t entries)
{
    last_commit_time_ = commit_time;
    uint64_t at = end_ + pending;
    if (at - indexed_at_ < kIndexEvery)
        return;
    pending_.push_back(make_record(kTxnEnd, at, entries_ + entries, lsn, commit_time));
    indexed_at_ = at;
}

void Writer::sync(uint64_t decoded_upto, bool wait)
{
    check_writes();
    if (end_ != submitted_end_) {
        Round round{0, end_, entries_, decoded_upto, last_commit_time_};
        /* The round end; a new segment's first record too (where it starts). */
        const IndexRecord first =
            make_record(kRoundEnd, end_, entries_, decoded_upto, last_commit_time_);
        pending_.push_back(first);
        std::vector<IndexRecord> records;
        records.swap(pending_);
        bool roll = end_ - seg_start_ >= segment_bytes();
        int new_seg_fd = -1, new_idx_fd = -1;
        std::string schemas;
        if (roll) {
            /* The next segment starts here, with the schemas in effect here. */
            open_segment_files(end_, &new_seg_fd, &new_idx_fd);
            schemas = schemas_text();
        }
        round.ticket = io_.call([dir = dir_, seg_start = seg_start_, seg_fd = seg_fd_,
                                 idx_fd = idx_fd_, records = std::move(records), roll,
                                 schemas = std::move(schemas), start = end_, new_seg_fd, new_idx_fd,
                                 first, segment_bytes = segment_bytes()](bool skipped) {
            try {
                if (!skipped) {
                    make_round_durable(dir, seg_start, seg_fd, idx_fd, records);
                    if (roll) {
                        write_file_durably(dir, schemas_path(dir, start), schemas);
                        make_segment_durable(dir, start, new_seg_fd, new_idx_fd, first,
                                             segment_bytes);
                    }
                }
            } catch (...) {
                if (roll) {
                    ::close(seg_fd);
                    ::close(idx_fd);
                }
                throw;
            }
            if (roll) { /* the filled segment: nothing more is written to it */
                ::close(seg_fd);
                ::close(idx_fd);
            }
        });
        rounds_.push_back(round);
        submitted_end_ = end_;
        if (roll) {
            seg_fd_ = new_seg_fd;
            idx_fd_ = new_idx_fd;
            seg_start_ = end_;
            indexed_at_ = end_;
            segments_++;
        }
    } else if (!rounds_.empty()) {
        /* Nothing written since: durable with the last round. */
        rounds_.back().lsn = std::max(rounds_.back().lsn, decoded_upto);
    } else {
        durable_lsn_ = std::max(durable_lsn_, decoded_upto);
    }
    if (wait)
        io_.drain();
    if (!reap())
        publish();
}

bool Writer::wait_durable()
{
    if (rounds_.empty())
        return false;
    io_.drain();
    return reap();
}

bool Writer::reap()
{
    /* Rounds made durable before a failure are taken in (and published) first. */
    uint64_t done = io_.completed();
    if (rounds_.empty() || rounds_.front().ticket > done) {
        check_writes();
        return false;
    }
    while (!rounds_.empty() && rounds_.front().ticket <= done) {
        const Round &r = rounds_.front();
        durable_end_ = r.end;
        durable_entries_ = r.entries;
        durable_lsn_ = std::max(durable_lsn_, r.lsn);
        durable_commit_time_ = r.commit_time;
        rounds_.pop_front();
    }
    publish();
    check_writes();
    return true;
}

/* The schemas in effect at the end written: a new segment's schemas file. */
std::string Writer::schemas_text() const
{
    std::string text;
    for (const auto &e : schemas_) {
        text.append(e.second);
        text.push_back('\n');
    }
    return text;
}

/* Start the next segment where this one ends, with the schemas in effect there. */
void Writer::roll()
{
    uint64_t start = durable_end_;
    write_file_durably(dir_, schemas_path(dir_, start), schemas_text());
    create_segment(start);
    publish();
}

bool Writer::roll_if_delivered(uint64_t min_cursor)
{
    if (durable_end_ == seg_start_ || end_ != durable_end_ || min_cursor < durable_end_)
        return false;
    roll();
    return true;
}

void Writer::remove_delivered(uint64_t min_cursor, int retention_s)
{
    std::vector<Segment> segments = list_segments(dir_);
    time_t now = time(nullptr);
    std::vector<std::string> doomed;
    size_t i = 0;
    for (; i + 1 < segments.size(); i++) {
        const Segment &s = segments[i];
        if (s.start + s.size > min_cursor || segments[i + 1].start != s.start + s.size)
            break;
        if (retention_s > 0 && now - s.mtime < retention_s)
            break;
        /*
         * Renamed out of readers' sight now (the .jsonl first: readers list
         * segments by it), removed by the writes' thread.
         */
        for (const std::string &path : {segment_path(dir_, s.start), index_path(dir_, s.start),
                                        schemas_path(dir_, s.start)}) {
            std::string gone = path + kRemovedSuffix;
            if (rename(path.c_str(), gone.c_str()) == 0)
                doomed.push_back(gone);
            else if (errno != ENOENT)
                fail("remove", path, errno);
        }
    }
    if (!doomed.empty()) {
        sync_directory(dir_);
        io_.unlink_later(std::move(doomed));
    }
    bytes_ = 0;
    for (size_t j = i; j < segments.size(); j++) {
        /* A segment followed by another ends where it starts (its last writes may be queued). */
        uint64_t size =
            j + 1 < segments.size() ? segments[j + 1].start - segments[j].start : segments[j].size;
        bytes_ += segments[j].start == seg_start_ ? end_ - seg_start_ : size;
    }
    oldest_ = segments.empty() ? 0 : segments[i].start;
    segments_ = static_cast<int>(segments.size() - i);
    publish();
}

void Writer::publish()
{
    LWLockAcquire(shared_lock, LW_EXCLUSIVE);
    SpoolShared &s = shared->spool;
    bool advanced = !s.ready || s.durable_end != durable_end_ || s.durable_lsn != durable_lsn_;
    s.ready = true;
    s.id = id_;
    s.durable_end = durable_end_;
    s.durable_entries = durable_entries_;
    s.durable_lsn = durable_lsn_;
    s.newest_commit_time = durable_commit_time_;
    s.oldest_offset = oldest_;
    s.bytes = bytes_;
    s.segments = segments_;
    LWLockRelease(shared_lock);
    if (advanced)
        wake_delivery_workers();
}

} // namespace pgsink::spool
