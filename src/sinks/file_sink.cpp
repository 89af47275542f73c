/*
 * file_sink.cpp: the file sink.
 *
 * Exactly once: the cursor its delivery worker saves after each fsync
 * carries the file's identity (device, inode) and size (state()). At open,
 * the same file is cut back to that size: what was written after the
 * cursor (and a torn last line) goes, and is delivered again from the
 * spool. A file that never had a cursor (the first start, an upgrade from
 * a release without the spool) is cut by lsn instead: every line whose lsn
 * is at or after the first entry to deliver goes, found by reading
 * backwards; a line's lsn is read from its head, key by key, never from
 * inside a value.
 *
 * The file is opened with O_APPEND: after logrotate's copytruncate the next
 * line starts at the file's new end, with no hole of NUL bytes.
 *
 * A failed write is undone (ftruncate to the last whole line) and retried.
 * If the undo fails too, or an fsync fails (the kernel may have dropped the
 * pages), the error is not retryable: the delivery worker restarts, and
 * open() cuts back to the sink's own cursor, never further.
 *
 * The file can be moved, deleted or truncated under us. Between batches
 * (between_rounds()) and before each acknowledgement (sync()) the open file
 * is compared with the path: entries made durable in a file that was moved
 * stay there (logrotate's "create" rotation) and the next batch goes to a
 * new file at the path; entries written into a deleted or truncated file
 * are never acknowledged: the worker restarts and writes them again.
 */
#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "changelog/entry_head.h"
#include "sinks/file_sink.h"

namespace pgsink
{

FileSink::~FileSink()
{
    if (fd_ >= 0)
        ::close(fd_);
}

void FileSink::fail(const std::string &what, int err, bool retryable)
{
    throw SinkError("could not " + what + " " + describe() + ": " + strerror(err), retryable);
}

void FileSink::truncate_replayed(uint64_t replay_from)
{
    off_t end = lseek(fd_, 0, SEEK_END);
    if (end < 0)
        fail("seek in", errno, true);

    /* Find the start of each line from the end, reading backwards in blocks. */
    constexpr size_t kBlock = 64 * 1024;
    constexpr size_t kHead = 4096; /* the "lsn" key is always within a line's first bytes */
    std::vector<char> block(kBlock);
    std::string head;
    off_t cut = end;      /* everything from here on goes */
    off_t line_end = end; /* end (exclusive, after '\n') of the line being looked at */
    off_t pos = end;
    bool torn_checked = false;
    constexpr int kMaxForeignLines = 10000;
    int foreign_lines = 0;

    while (line_end > 0) {
        /* Find the '\n' that ends the previous line: the line starts after it. */
        off_t start = -1;
        off_t search_to = line_end - 1; /* skip this line's own terminating '\n' */
        pos = search_to;
        while (pos > 0 && start < 0) {
            size_t n = static_cast<size_t>(std::min<off_t>(pos, kBlock));
            if (pread(fd_, block.data(), n, pos - n) != static_cast<ssize_t>(n))
                fail("read", errno ? errno : EIO, true);
            for (size_t i = n; i > 0; i--) {
                if (block[i - 1] == '\n') {
                    start = pos - n + i;
                    break;
                }
            }
            pos -= n;
        }
        if (start < 0)
            start = 0;

        if (!torn_checked) {
            torn_checked = true;
            char last = 0;
            if (pread(fd_, &last, 1, end - 1) != 1)
                fail("read", errno ? errno : EIO, true);
            if (last != '\n') {
                /* A torn write: the last line never completed. */
                cut = start;
                line_end = start;
                continue;
            }
        }

        head.resize(static_cast<size_t>(std::min<off_t>(line_end - start, kHead)));
        if (pread(fd_, head.data(), head.size(), start) != static_cast<ssize_t>(head.size()))
            fail("read", errno ? errno : EIO, true);
        uint64_t lsn;
        if (!line_lsn(head, &lsn)) {
            /*
             * Not an entry (a line someone else appended, the tail of a line
             * whose head was rotated away): look further back, so that
             * unconfirmed entries before it are cut too; it goes with them
             * if it follows one. A file of other lines only is not ours:
             * stop after many.
             */
            if (++foreign_lines > kMaxForeignLines)
                break;
            line_end = start;
            continue;
        }
        foreign_lines = 0;
        if (lsn < replay_from)
            break; /* confirmed: keep it and everything before */
        cut = start;
        line_end = start;
    }

    truncate_to(cut);
}

void FileSink::truncate_to(off_t cut)
{
    off_t end = lseek(fd_, 0, SEEK_END);
    if (end < 0)
        fail("seek in", errno, true);
    if (cut < end) {
        if (ftruncate(fd_, cut) != 0)
            fail("truncate", errno, true);
        if (fsync(fd_) != 0)
            fail("fsync", errno, false);
    }
    size_ = std::min(cut, end);
}

/*
 * A checksum of the last bytes before size in the open file: with the
 * inode number it tells our file from a new one that reuses the inode of a
 * deleted one (file systems do that at once).
 */
uint32_t FileSink::tail_checksum(off_t size) const
{
    char tail[64];
    off_t from = std::max<off_t>(0, size - static_cast<off_t>(sizeof(tail)));
    ssize_t n = size > 0 ? pread(fd_, tail, static_cast<size_t>(size - from), from) : 0;
    if (n != size - from)
        return 0;
    uint32_t h = 2166136261u; /* FNV-1a */
    for (ssize_t i = 0; i < n; i++)
        h = (h ^ static_cast<unsigned char>(tail[i])) * 16777619u;
    return h;
}

std::string FileSink::state() const
{
    char buf[128];
    snprintf(buf, sizeof(buf), "file %" PRIu64 " %" PRIu64 " %" PRId64 " %" PRIu32,
             static_cast<uint64_t>(dev_), static_cast<uint64_t>(ino_), static_cast<int64_t>(size_),
             tail_checksum(size_));
    return buf;
}

/* Make the file's directory entry durable: a new file must survive a crash too. */
void FileSink::sync_directory()
{
    size_t slash = path_.rfind('/');
    std::string dir =
        slash == std::string::npos ? "." : (slash == 0 ? "/" : path_.substr(0, slash));
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        fail("open the directory of", errno, true);
    int rc = fsync(dfd);
    int err = errno;
    ::close(dfd);
    if (rc != 0)
        fail("fsync the directory of", err, true);
}

bool FileSink::open(const Resume &from)
{
    bool fresh = false;
    if (fd_ < 0) {
        fd_ = ::open(path_.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd_ < 0)
            fail("open", errno, true);
        recovered_ = false;
        /* Who the file is, first: a retry of what follows finds fd_ open. */
        struct stat st;
        if (fstat(fd_, &st) != 0) {
            int err = errno;
            ::close(fd_);
            fd_ = -1;
            fail("stat", err, true);
        }
        dev_ = st.st_dev;
        ino_ = st.st_ino;
        size_ = st.st_size;
        try {
            sync_directory();
        } catch (const SinkError &) {
            ::close(fd_); /* the retry opens (and syncs) again */
            fd_ = -1;
            throw;
        }
    }
    if (!recovered_) {
        uint64_t dev = 0, ino = 0;
        int64_t size = 0;
        uint32_t tail = 0;
        bool have_state =
            !from.state.empty() &&
            sscanf(from.state.c_str(), "file %" SCNu64 " %" SCNu64 " %" SCNd64 " %" SCNu32, &dev,
                   &ino, &size, &tail) == 4;
        /* Ours: the same inode, at least as long, with the bytes we wrote before size. */
        bool ours = have_state && dev == static_cast<uint64_t>(dev_) &&
                    ino == static_cast<uint64_t>(ino_) && size_ >= size &&
                    tail_checksum(static_cast<off_t>(size)) == tail;
        if (!have_state) {
            /* No lsn to cut from (an empty spool): only a torn last line goes. */
            truncate_replayed(from.first_lsn != 0 ? from.first_lsn : UINT64_MAX);
            fresh = size_ == 0;
        } else if (ours) {
            /* What follows the cursor's size was never acknowledged. */
            truncate_to(static_cast<off_t>(size));
        } else {
            /*
             * Another file than the cursor's (rotated, replaced or truncated
             * while the worker was down): nothing in it is ours to cut.
             */
            size_ = lseek(fd_, 0, SEEK_END);
            if (size_ < 0)
                fail("seek in", errno, true);
            fresh = true;
        }
        recovered_ = true;
    }
    return fresh;
}

void FileSink::write(const char *data, size_t len)
{
    if (fd_ < 0)
        throw SinkError(describe() + " is not open after an earlier failure", false);
    /*
     * The file must end where our last line ended: if it was truncated (or
     * written by someone else) during this round, lines of this round may
     * be gone, and an undo to size_ would cut at an unrelated offset.
     */
    off_t real_end = lseek(fd_, 0, SEEK_END);
    if (real_end != size_) {
        ::close(fd_);
        fd_ = -1;
        throw SinkError(describe() + " changed size under pgsink during a round (truncated?); " +
                            "the stream restarts from the last confirmed position",
                        false);
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = ::write(fd_, data + done, len - done); /* O_APPEND: at the file's end */
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int err = errno;
            /*
             * Undo the partial write so that the retry appends whole lines
             * only. If that fails, or the file shrank under us (an undo
             * would then pad it with NUL bytes), the file may end in a torn
             * line after lines of this round that are not confirmed: only a
             * restart, whose cut goes back to the slot's confirmed position,
             * puts it right.
             */
            struct stat st;
            if (fstat(fd_, &st) != 0 || st.st_size < size_ || ftruncate(fd_, size_) != 0) {
                ::close(fd_);
                fd_ = -1;
                throw SinkError("could not write to " + describe() + ": " + strerror(err) +
                                    " (and could not undo the partial write: the stream "
                                    "restarts from the last confirmed position)",
                                false);
            }
            fail("write to", err, true);
        }
        done += static_cast<size_t>(n);
    }
    /* Start writing it out now: the fsync that acknowledges it has less left to do. */
    (void)sync_file_range(fd_, size_, static_cast<off_t>(len), SYNC_FILE_RANGE_WRITE);
    size_ += static_cast<off_t>(len);
    dirty_ = true;
}

/* What became of the file at path_ since we opened it. */
FileSink::Fate FileSink::fate() const
{
    struct stat open_st, path_st;
    if (fstat(fd_, &open_st) != 0)
        return Fate::deleted;
    if (open_st.st_nlink == 0)
        return Fate::deleted;
    if (stat(path_.c_str(), &path_st) != 0 || path_st.st_dev != dev_ || path_st.st_ino != ino_)
        return Fate::moved;
    if (open_st.st_size < size_)
        return Fate::truncated;
    return Fate::same;
}

Sink::Notice FileSink::between_rounds()
{
    Notice n;
    if (fd_ < 0 || !recovered_)
        return n;
    switch (fate()) {
    case Fate::same:
        return n;
    case Fate::truncated:
        /* Everything in it was confirmed: go on at its new end. */
        n.level = Notice::Level::log;
        n.message = describe() + " was truncated (by logrotate's copytruncate?); new entries are "
                                 "appended at its new end";
        size_ = lseek(fd_, 0, SEEK_END);
        return n;
    case Fate::moved:
        n.level = Notice::Level::log;
        n.message =
            describe() + " was moved or replaced; new entries go to a new file at that path";
        break;
    case Fate::deleted:
        n.level = Notice::Level::warning;
        n.message = describe() + " was deleted; new entries go to a new file at that path";
        n.detail = "The entries confirmed before were in the deleted file. To rotate the file, "
                   "move it away: pgsink notices and starts a new one.";
        break;
    }
    close(); /* everything in it was confirmed; the next open() makes a new file */
    n.reopen = true;
    return n;
}

void FileSink::sync()
{
    if (!dirty_)
        return;
    if (fdatasync(fd_) != 0) {
        int err = errno;
        ::close(fd_);
        fd_ = -1;
        fail("fsync", err, false);
    }
    /* Entries in a file nobody can read any more are never confirmed. */
    Fate f = fate();
    if (f == Fate::deleted || f == Fate::truncated) {
        ::close(fd_);
        fd_ = -1;
        throw SinkError(describe() + (f == Fate::deleted ? " was deleted" : " was truncated") +
                            " while entries were written to it; they are written again",
                        false);
    }
    dirty_ = false;
}

void FileSink::close()
{
    if (fd_ >= 0)
        ::close(fd_);
    fd_ = -1;
    recovered_ = false;
}

} // namespace pgsink
