/*
 * sink.h: the interface every sink implements.
 *
 * A sink is a consumer of the spool (see spool/): its delivery worker reads
 * batches of entries (JSON lines) from the sink's cursor, writes them, asks
 * the sink to make them durable, and only then saves the cursor, together
 * with the state the sink returns (state()). After a crash delivery resumes
 * at the cursor and open() gets that state back: a sink that can, drops
 * what it received after it (the file sink cuts its file back), which makes
 * delivery exactly-once; others rely on the entries' (lsn, sequence).
 *
 * A sink raises SinkError: retryable errors (a full disk, a server that is
 * down) are retried with back-off and lose nothing; others restart the
 * delivery worker, which resumes at the cursor.
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
    /* How long the sink asked to wait before the next attempt (Retry-After); -1: no ask. */
    long retry_after_ms() const noexcept { return retry_after_ms_; }
    void set_retry_after_ms(long ms) noexcept { retry_after_ms_ = ms; }

  private:
    bool retryable_;
    long retry_after_ms_ = -1;
};

/*
 * The sink refused a batch for good (an HTTP 4xx other than 408 and 429):
 * sending it again as it is will not help. too_large: it refused the
 * batch's size (413); smaller batches may pass. The delivery worker
 * bisects the batch to find the entries refused, and parks them as dead
 * letters (pgsink.on_rejection).
 */
class SinkRejected : public SinkError
{
  public:
    SinkRejected(const std::string &what, int status, std::string response, bool too_large)
        : SinkError(what, false), status_(status), response_(std::move(response)),
          too_large_(too_large)
    {
    }
    int status() const noexcept { return status_; }
    const std::string &response() const noexcept { return response_; }
    bool too_large() const noexcept { return too_large_; }

  private:
    int status_;
    std::string response_;
    bool too_large_;
};

class Sink
{
  public:
    virtual ~Sink() = default;

    /* Where delivery resumes. */
    struct Resume {
        /* What state() returned when the cursor was last saved; empty: never saved. */
        std::string state;
        /*
         * Without a state: every entry whose lsn is at or after this one is
         * delivered (again); a sink that can, removes such entries it holds.
         */
        uint64_t first_lsn = 0;
    };
    /*
     * Get ready to receive entries. Returns true when the destination is
     * new (a new file): it does not hold the schemas announced before, so
     * the delivery worker sends them again first.
     */
    virtual bool open(const Resume &from) = 0;
    /* Append entries (newline-terminated JSON lines). */
    virtual void write(const char *data, size_t len) = 0;
    /* Make everything written so far durable (acknowledged). */
    virtual void sync() = 0;
    /* After sync(): what open() needs to resume exactly here (at most 200 bytes). */
    virtual std::string state() const { return {}; }
    virtual void close() = 0;
    /* Can it refuse entries for good (SinkRejected)? Then it may have dead letters. */
    virtual bool can_reject() const { return false; }
    /* For messages: "file /path/to/changes.jsonl". Never holds a secret. */
    virtual std::string describe() const = 0;

    /* What a sink found between batches, for the log (see between_rounds()). */
    struct Notice {
        enum class Level { none, log, warning } level = Level::none;
        std::string message;
        std::string detail; /* for warnings: what it means, and what to do */
        /* The sink closed its destination: open() it again, announce every schema again. */
        bool reopen = false;
    };
    /*
     * Called between batches, when everything written is durable: a sink
     * can notice what happened to its destination meanwhile (the file sink:
     * a file moved away, deleted or truncated).
     */
    virtual Notice between_rounds() { return {}; }
};

/*
 * While a sink waits (on the network), it calls sink_poll() at least every
 * tenth of a second: the delivery worker serves interrupts there (SIGTERM
 * ends the process; anything else is thrown, and unwinds the sink).
 */
void set_sink_poll(void (*poll)());
void sink_poll();

} // namespace pgsink
