/*
 * sink.h: the interface every sink implements.
 *
 * A sink is a consumer of the spool (see spool/): its delivery worker reads
 * batches of entries (JSON lines) from the sink's cursor, delivers them (an
 * AppendSink: writes, then makes them durable; an HttpSink: requests, until
 * acknowledged), and only then saves the cursor, together with the state the
 * sink returns (state()). After a crash delivery resumes
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
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "http/delivery_window.h"
#include "http/http_pipeline.h"

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

/*
 * Thrown while making a batch's requests or reading their answers when the
 * batch's own entries are at fault (a line that is not a changelog entry,
 * as a damaged spool would hold): the same batch would fail at every
 * attempt and hold the cursor for ever. The delivery worker refuses it
 * instead, as a receiver's refusal: bisected down to the entries at fault,
 * parked in pgsink.dead_letters with this message. Anything else a sink
 * throws there (a credential it cannot read, memory) is retried.
 */
class EntryError : public std::runtime_error
{
  public:
    using std::runtime_error::runtime_error;
};

/*
 * Why a state sink (ClickHouse, Elasticsearch, BigQuery) refuses a delete
 * whose "before" is null: it has no key to delete by. The changelog writes
 * one for a table that had REPLICA IDENTITY NOTHING, or no primary key
 * (dropped after add_table()), when the row was deleted. Skipping it would
 * leave the row in the sink for good, silently: it is parked instead.
 */
inline constexpr char kNoOldKey[] =
    "a delete without the old key (\"before\" is null: the table had REPLICA IDENTITY NOTHING, "
    "or no key, when the row was deleted): the sink cannot tell which row it removed; give the "
    "table a key (or REPLICA IDENTITY FULL), then import it again";

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
    /* What open() needs to resume exactly at the cursor (at most 200 bytes). */
    virtual std::string state() const { return {}; }
    virtual void close() = 0;
    /* Can it refuse entries for good? Then it may have dead letters. */
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

/* A sink written as a stream (a file): the delivery worker writes, then syncs. */
class AppendSink : public Sink
{
  public:
    /* Append entries (newline-terminated JSON lines). */
    virtual void write(const char *data, size_t len) = 0;
    /* Make everything written so far durable (acknowledged); state() is saved after it. */
    virtual void sync() = 0;
};

/*
 * A sink that takes batches over HTTP. It only says how a batch becomes
 * requests and what the answers mean (per entry where its answers say so);
 * the delivery machinery (http/http_pipeline.h, http/delivery_window.h)
 * owns the requests in flight, retries, splitting, dead letters and the
 * cursor.
 */
class HttpSink : public Sink
{
  public:
    /*
     * One attempt at delivering a batch: the requests it takes, one after
     * the other (a table to create, current rows to read, then the
     * inserts), and what the answers mean. Made anew for every attempt.
     */
    class Exchange
    {
      public:
        virtual ~Exchange() = default;
        /* The next request: called first, and after each answer() that returned nothing. */
        virtual HttpRequest next() = 0;
        /* The answer to the last request: the batch's Answer, or nullopt to send next(). */
        virtual std::optional<Answer> answer(const HttpResponse &response) = 0;
        /*
         * The batches before this one: all delivered, all in flight, or
         * some waiting for a retry. Told before every next() and answer(),
         * for an exchange that reads what they wrote.
         */
        enum class Earlier { done, in_flight, waiting };
        virtual void set_earlier(Earlier earlier) { (void)earlier; }
        /*
         * For an exchange made ahead (prepares_ahead()): is what it took of
         * the sink when it was made still what the sink holds? If not, its
         * request is dropped and the exchange made again when it goes out.
         */
        virtual bool current() const { return true; }
    };
    /*
     * The exchange for lines (valid until it ends); key is the batch's id,
     * the same on every attempt of it. By default one request (request())
     * and its answer (answer()).
     */
    virtual std::unique_ptr<Exchange> exchange(std::string_view lines, const std::string &key);
    /*
     * The same for entries sent again out of their order (parked entries
     * that pgsink.retry_dead_letters() asked for): a change older than what
     * the sink already holds may come after it. A sink whose destination
     * keeps the last written of equal versions checks; by default exchange().
     */
    virtual std::unique_ptr<Exchange> exchange_resent(std::string_view lines,
                                                      const std::string &key)
    {
        return exchange(lines, key);
    }
    /*
     * What the batches of exchange() come from: the spool's identity and the
     * replay (pgsink.rewind_sink()) the cursor is in, told before every
     * exchange(). Entries at the same (lsn, sequence) under the same
     * identity are the same entries, whatever batch they arrive in (a batch
     * after a restart has the schemas in front, a retry is cut otherwise).
     */
    virtual void set_stream(const std::string &identity) { (void)identity; }
    /* The request of a one-request exchange. */
    virtual HttpRequest request(std::string_view lines, const std::string &key);
    /* What the answer to a one-request exchange means. */
    virtual Answer answer(const HttpResponse &response, std::string_view lines);
    virtual HttpOptions http_options() const = 0;
    /*
     * Can the first request of a fresh exchange be made on another thread
     * while requests are in flight (http/request_prefetch.h)? The next
     * batch is then read from the spool on a thread too (one more batch
     * held), so that making its request can start at once. Only if
     * next() reads nothing but the batch, settings fixed when the sink was
     * made, and what the exchange took of the sink when it was made (on the
     * worker's thread; current() says if that is still so), and changes
     * nothing but the exchange.
     */
    virtual bool prepares_ahead() const { return false; }
    /*
     * With prepares_ahead(): is every batch made ahead as soon as it is
     * read, even one that could go out at once, and sent when made? For a
     * sink whose requests cost the worker more to make than to send: the
     * worker serves the requests in flight meanwhile.
     */
    virtual bool makes_every_request_ahead() const { return false; }
    /*
     * With prepares_ahead(): how many batches' requests may be made ahead
     * at once, each on a thread of its own? More than one only if fresh
     * exchanges share nothing the making writes.
     */
    virtual int made_ahead_at_once() const { return 1; }
    /*
     * With prepares_ahead(): the oldest a request made ahead may be when it
     * goes out (older, it is made again): a signature's timestamp goes
     * stale. No limit by default.
     */
    virtual int64_t made_ahead_max_age_ms() const { return INT64_MAX; }
    /*
     * Is the next request sent before the cursor's save (a file synced)?
     * For a sink with one request in flight, whose receiver had nothing to
     * do meanwhile (the webhook: measured for it).
     */
    virtual bool sends_before_cursor_save() const { return false; }
    /* Requests in flight when pgsink.max_in_flight is 0. */
    virtual int default_max_in_flight() const { return 1; }
    /* The most requests in flight whatever pgsink.max_in_flight says (0: no limit). */
    virtual int max_in_flight_limit() const { return 0; }
    /*
     * Where the batch of lines read from the spool ends, when more follows
     * (the rest goes in the next batch): a sink whose batches overlap only
     * when they share no transaction ends them at a transaction's end. By
     * default all of them.
     */
    virtual size_t batch_end(std::string_view lines) const { return lines.size(); }
    /*
     * How the batch of lines may overlap with the batches before it in
     * flight (see Order in http/delivery_window.h); asked once for each
     * batch read, in the spool's order (resent: entries sent again from
     * the dead letters, out of that order), with the key its exchange()
     * will get. By default any order: the batches are independent
     * (max_in_flight 1 keeps them in order anyway).
     */
    virtual Order order_of(std::string_view lines, const std::string &key, bool resent)
    {
        (void)lines;
        (void)key;
        (void)resent;
        return Order::free;
    }
    bool can_reject() const override { return true; }
};

} // namespace pgsink
