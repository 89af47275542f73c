/*
 * sink.h: the interface every sink implements.
 *
 * The stream writes entries (JSON lines) as batches fill, then asks the sink
 * to make everything written durable; only after that does the replication
 * slot confirm. A sink raises SinkError: retryable errors (a full disk, a
 * server that is down) are retried with back-off and lose nothing.
 *
 * Pure C++: no PostgreSQL headers.
 */
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace pgsink
{

class SinkError : public std::runtime_error
{
  public:
    SinkError(const std::string &what, bool retryable)
        : std::runtime_error(what), retryable_(retryable)
    {
    }
    bool retryable() const noexcept { return retryable_; }

  private:
    bool retryable_;
};

class Sink
{
  public:
    virtual ~Sink() = default;
    /*
     * Get ready to receive entries. Every entry whose lsn is at or after
     * replay_from (the slot's confirmed position) will be delivered again:
     * a sink that can, removes such entries it already holds.
     */
    virtual void open(uint64_t replay_from) = 0;
    /* Append entries (newline-terminated JSON lines). */
    virtual void write(const char *data, size_t len) = 0;
    /* Make everything written so far durable. */
    virtual void sync() = 0;
    virtual void close() = 0;
    /* For messages: "file /path/to/changes.jsonl". */
    virtual std::string describe() const = 0;

    /* What a sink found between rounds, for the log (see between_rounds()). */
    struct Notice {
        enum class Level { none, log, warning } level = Level::none;
        std::string message;
        std::string detail; /* for warnings: what it means, and what to do */
        /* The sink closed its destination: open() it again, announce every schema again. */
        bool reopen = false;
    };
    /*
     * Called between rounds, when everything written is confirmed: a sink
     * can notice what happened to its destination meanwhile (the file sink:
     * a file moved away, deleted or truncated).
     */
    virtual Notice between_rounds() { return {}; }
};

/* Parse PostgreSQL's text form of an LSN ("16/B374D848"); false if malformed. */
bool parse_lsn(const char *s, size_t len, uint64_t *lsn);

} // namespace pgsink
