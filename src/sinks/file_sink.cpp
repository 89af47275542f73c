/*
 * file_sink.cpp: the file sink.
 *
 * Exactly once: at open, every line whose lsn is at or after the slot's
 * confirmed position is cut from the end of the file (those transactions
 * will be decoded and written again), together with a torn last line. Lines
 * are in commit order, so the cut is found by reading backwards.
 *
 * A failed write is undone (ftruncate to the last whole line) and retried.
 * A failed fsync is not retried in place: after it the kernel may have
 * dropped the pages, so the error is not retryable; the worker restarts, and
 * the cut at open rewrites what was not confirmed.
 */
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>
#include <vector>

#include "sinks/file_sink.h"

namespace pgsink
{

bool parse_lsn(const char *s, size_t len, uint64_t *lsn)
{
    uint64_t hi = 0, lo = 0;
    size_t i = 0;
    int digits = 0;
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9')
            return c - '0';
        if (c >= 'A' && c <= 'F')
            return c - 'A' + 10;
        if (c >= 'a' && c <= 'f')
            return c - 'a' + 10;
        return -1;
    };
    for (; i < len && hex(s[i]) >= 0 && digits < 8; i++, digits++)
        hi = hi * 16 + hex(s[i]);
    if (digits == 0 || i >= len || s[i] != '/')
        return false;
    i++;
    digits = 0;
    for (; i < len && hex(s[i]) >= 0 && digits < 8; i++, digits++)
        lo = lo * 16 + hex(s[i]);
    if (digits == 0)
        return false;
    *lsn = (hi << 32) | lo;
    return true;
}

FileSink::~FileSink()
{
    if (fd_ >= 0)
        ::close(fd_);
}

void FileSink::fail(const std::string &what, int err, bool retryable)
{
    throw SinkError("could not " + what + " " + describe() + ": " + strerror(err), retryable);
}

/* The lsn of a changelog line: the first "lsn" key, which precedes any row data. */
static bool line_lsn(const std::string &head, uint64_t *lsn)
{
    static const char kKey[] = "\"lsn\":\"";
    size_t at = head.find(kKey);
    if (at == std::string::npos)
        return false;
    at += sizeof(kKey) - 1;
    size_t end = head.find('"', at);
    if (end == std::string::npos)
        return false;
    return parse_lsn(head.data() + at, end - at, lsn);
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
        if (!line_lsn(head, &lsn) || lsn < replay_from)
            break; /* confirmed, or not ours to judge: keep it and everything before */
        cut = start;
        line_end = start;
    }

    if (cut < end) {
        if (ftruncate(fd_, cut) != 0)
            fail("truncate", errno, true);
        if (fsync(fd_) != 0)
            fail("fsync", errno, false);
    }
    size_ = cut;
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

void FileSink::open(uint64_t replay_from)
{
    replay_from_ = replay_from;
    if (fd_ < 0) {
        fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd_ < 0)
            fail("open", errno, true);
        recovered_ = false;
        sync_directory();
    }
    if (!recovered_) {
        truncate_replayed(replay_from);
        recovered_ = true;
    }
}

void FileSink::write(const char *data, size_t len)
{
    if (fd_ < 0 || !recovered_)
        open(replay_from_);
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(fd_, data + done, len - done, size_ + static_cast<off_t>(done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int err = errno;
            /* Undo the partial write so that the retry appends whole lines only. */
            if (ftruncate(fd_, size_) != 0) {
                ::close(fd_);
                fd_ = -1; /* reopen and re-run the cut before writing again */
            }
            fail("write to", err, true);
        }
        done += static_cast<size_t>(n);
    }
    size_ += static_cast<off_t>(len);
    dirty_ = true;
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
