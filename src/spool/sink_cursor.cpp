/*
 * sink_cursor.cpp: see sink_cursor.h.
 */
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

#include "boundary/pg_boundary.h"
#include "spool/sink_cursor.h"
#include "spool/spool_files.h"

extern "C" {
#include "port/pg_crc32c.h"
}

namespace pgsink::spool
{

namespace
{
/*
 * "PGSKCUR3" slots add replays after crc, covered by the CRC as well; a
 * "PGSKCUR2" slot (0.3.0 before it) is read with replays 0.
 */
struct Slot {
    char magic[8]; /* "PGSKCUR3" (or "PGSKCUR2") */
    uint64_t seq;
    uint64_t spool_id;
    uint64_t offset;
    uint64_t entries;
    uint64_t delivered_lsn;
    int64_t delivered_time;
    uint32_t state_len;
    char state[kMaxState];
    uint32_t announce;
    uint32_t crc;
    uint32_t unused; /* zero: keeps replays aligned */
    uint64_t replays;
    char pad[512 - 8 - 6 * 8 - 4 - kMaxState - 4 - 4 - 4 - 8];
};
static_assert(sizeof(Slot) == 512, "a cursor slot is one 512-byte sector");

uint32_t slot_crc(const Slot &s)
{
    pg_crc32c crc;
    INIT_CRC32C(crc);
    COMP_CRC32C(crc, &s, offsetof(Slot, crc));
    if (memcmp(s.magic, "PGSKCUR3", 8) == 0)
        COMP_CRC32C(crc, &s.replays, sizeof(s.replays));
    FIN_CRC32C(crc);
    return crc;
}

bool slot_valid(const Slot &s)
{
    bool magic = memcmp(s.magic, "PGSKCUR3", 8) == 0 || memcmp(s.magic, "PGSKCUR2", 8) == 0;
    return magic && s.state_len <= kMaxState && s.crc == slot_crc(s);
}

/* The newer valid slot of the file open at fd; false if neither is valid. */
bool read_slots(int fd, Slot *best)
{
    Slot slots[2];
    ssize_t n = pread(fd, slots, sizeof(slots), 0);
    bool found = false;
    for (int i = 0; i < 2; i++) {
        if (n < static_cast<ssize_t>((i + 1) * sizeof(Slot)) || !slot_valid(slots[i]))
            continue;
        if (!found || slots[i].seq > best->seq) {
            *best = slots[i];
            found = true;
        }
    }
    return found;
}

void to_cursor(const Slot &s, Cursor *c)
{
    c->spool_id = s.spool_id;
    c->offset = s.offset;
    c->entries = s.entries;
    c->delivered_lsn = s.delivered_lsn;
    c->delivered_time = s.delivered_time;
    c->sink_state.assign(s.state, s.state_len);
    c->announce = s.announce != 0;
    c->replays = memcmp(s.magic, "PGSKCUR3", 8) == 0 ? s.replays : 0;
}
} // namespace

CursorFile::CursorFile(std::string dir, std::string sink)
    : dir_(std::move(dir)), path_(cursor_path(dir_, sink))
{
}

CursorFile::~CursorFile()
{
    if (fd_ >= 0)
        ::close(fd_);
}

void CursorFile::reset()
{
    if (fd_ >= 0)
        ::close(fd_);
    fd_ = -1;
    seq_ = 0;
}

bool CursorFile::load(Cursor *c)
{
    if (fd_ < 0) {
        fd_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
        if (fd_ < 0) {
            if (errno == ENOENT)
                return false;
            throw Error(ERRCODE_IO_ERROR, "could not open \"" + path_ + "\": " + strerror(errno));
        }
    }
    Slot s;
    if (!read_slots(fd_, &s))
        return false;
    seq_ = s.seq;
    to_cursor(s, c);
    return true;
}

void CursorFile::save(const Cursor &c)
{
    if (fd_ < 0) {
        std::string sinks = dir_ + "/sinks";
        fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd_ < 0)
            throw Error(ERRCODE_IO_ERROR, "could not create \"" + path_ + "\": " + strerror(errno));
        sync_directory(sinks);
        Slot s;
        if (read_slots(fd_, &s))
            seq_ = s.seq;
    }
    if (c.sink_state.size() > kMaxState)
        throw Error(ERRCODE_INTERNAL_ERROR, "a sink's cursor state is too long");
    Slot s;
    memset(&s, 0, sizeof(s));
    memcpy(s.magic, "PGSKCUR3", 8);
    s.seq = ++seq_;
    s.spool_id = c.spool_id;
    s.offset = c.offset;
    s.entries = c.entries;
    s.delivered_lsn = c.delivered_lsn;
    s.delivered_time = c.delivered_time;
    s.state_len = static_cast<uint32_t>(c.sink_state.size());
    memcpy(s.state, c.sink_state.data(), c.sink_state.size());
    s.announce = c.announce ? 1 : 0;
    s.replays = c.replays;
    s.crc = slot_crc(s);
    off_t at = static_cast<off_t>((s.seq % 2) * sizeof(Slot));
    if (pwrite(fd_, &s, sizeof(s), at) != static_cast<ssize_t>(sizeof(s)))
        throw Error(errno == ENOSPC ? ERRCODE_DISK_FULL : ERRCODE_IO_ERROR,
                    "could not write \"" + path_ + "\": " + strerror(errno));
    if (fdatasync(fd_) != 0)
        throw Error(ERRCODE_IO_ERROR, "could not fsync \"" + path_ + "\": " + strerror(errno));
}

bool read_cursor(const std::string &dir, const std::string &sink, Cursor *c)
{
    std::string path = cursor_path(dir, sink);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    Slot s;
    bool found = read_slots(fd, &s);
    ::close(fd);
    if (found)
        to_cursor(s, c);
    return found;
}

} // namespace pgsink::spool
