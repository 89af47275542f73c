/*
 * sink_cursor.h: a sink's cursor into the spool, saved durably by its
 * delivery worker after the sink acknowledged everything before it.
 *
 * One small file per sink, <spool>/sinks/<name>.cursor, with two 512-byte
 * slots written in turn (each with a sequence number and a CRC): a write
 * torn by a crash leaves the other slot, the previous cursor, intact. One
 * fdatasync per save.
 */
#pragma once

#include <cstdint>
#include <string>

namespace pgsink::spool
{

struct Cursor {
    uint64_t spool_id = 0;      /* the spool it points into */
    uint64_t offset = 0;        /* delivered up to here */
    uint64_t entries = 0;       /* entries before offset */
    uint64_t delivered_lsn = 0; /* every transaction committed before it is delivered */
    int64_t delivered_time = 0; /* commit time of the last entry delivered */
    std::string sink_state;     /* Sink::state() at the save (at most kMaxState bytes) */
    /* The sink must first be told the Schema entries in effect at offset (a new destination). */
    bool announce = false;
    /* Rewinds applied (pgsink.rewind_sink()): a replay is told apart from a retry. */
    uint64_t replays = 0;
};

constexpr size_t kMaxState = 256;

class CursorFile
{
  public:
    CursorFile(std::string dir, std::string sink);
    ~CursorFile();
    CursorFile(const CursorFile &) = delete;
    CursorFile &operator=(const CursorFile &) = delete;

    /* The saved cursor; false if the sink has none (new, or its file is gone). */
    bool load(Cursor *c);
    /* Close the file: the next load() or save() opens it again (the spool was made anew). */
    void reset();
    /* Save durably (creates the file the first time). Throws on failure. */
    void save(const Cursor &c);

  private:
    std::string dir_, path_;
    int fd_ = -1;
    uint64_t seq_ = 0;
};

/* Read a sink's saved cursor without keeping the file open; false if none. */
bool read_cursor(const std::string &dir, const std::string &sink, Cursor *c);

} // namespace pgsink::spool
