/*
 * delivery_window.h: the bookkeeping of requests in flight for a sink that
 * answers batch by batch (an HTTP sink): which batches are out, which wait
 * for a retry, how a refused batch is split, which entries go to the dead
 * letters, and how far the cursor may advance.
 *
 * The delivery worker adds ranges: the spool's entries in order, each read
 * as one batch (or entries parked earlier, sent again). A range is done when
 * every batch made of it is acknowledged or parked; the cursor advances past
 * a contiguous prefix of done ranges only (pop_done()), so a crash anywhere
 * sends again from the first range not done: at least once, never a gap.
 *
 * Answers (what the sink made of an HTTP answer):
 * - ack: the batch is delivered, but for the entries the answer names
 *   (sinks that answer entry by entry): those are retried or parked;
 * - retry: sent again after an exponential back-off with full jitter, or a
 *   longer Retry-After, up to the policy's most;
 * - reject: refused for good. The batch is bisected until the refused
 *   entries are isolated; each is parked (a dead letter) and the rest is
 *   delivered. With stop_on_rejection the batch is held instead (retried
 *   with back-off), but a batch refused as too large is still split.
 *
 * With max_in_flight 1 only the first unfinished batch is ever sent, so the
 * receiver gets batches in order, a retried one before the next. With more,
 * any batch that is due may go out, unless its order (what the sink computed
 * for it, see Order) says it depends on the batches before it: such a batch
 * goes out only once every batch before it is done (delivered or parked,
 * retries included), and, while it waits, no batch after it goes out
 * either; a batch that is alone also keeps every batch after it back until
 * it is done.
 *
 * Pure C++: no PostgreSQL headers, no network (the selftest drives it).
 */
#pragma once

#include <cstdint>
#include <list>
#include <string>
#include <string_view>
#include <vector>

namespace pgsink
{

/* What a sink made of the answer to one batch. */
struct Answer {
    enum class Kind { ack, retry, reject };
    Kind kind = Kind::ack;
    int status = 0;           /* HTTP status; 0: no answer */
    std::string message;      /* for the log and the status; never holds a secret */
    std::string response;     /* an excerpt of the answer, for dead letters */
    long retry_after_ms = -1; /* what the receiver asked for (Retry-After); -1: nothing */
    bool too_large = false;   /* reject: the request's size was refused; smaller may pass */
    /* With ack: the entries of the batch (by index, from 0) that were not taken. */
    struct Entry {
        size_t index;
        bool retry; /* false: refused for good */
        int status;
        std::string response;
    };
    std::vector<Entry> entries;
};

/* How a batch may overlap with the others in flight (with max_in_flight > 1). */
enum class Order {
    free,           /* independent of every batch before it */
    after_previous, /* only once every batch before it is done */
    alone           /* that, and no batch after it goes out before it is done */
};

struct WindowPolicy {
    bool stop_on_rejection = false;
    long first_retry_ms = 100;
    long max_retry_ms = 60000;
    double (*random)() = nullptr; /* uniform in [0, 1), for the jitter */
    /*
     * A batch done with is kept to be read into again (take_spare_lines())
     * only if its buffer is at most this big: one a huge line grew would
     * otherwise stay in memory, up to kSpares of them, while the sink idles.
     */
    size_t spare_at_most = 64 << 20;
};

class DeliveryWindow
{
  public:
    struct Batch {
        uint64_t id;
        uint64_t range;
        std::string lines; /* entries, each a newline-terminated JSON line */
        size_t entries;
        std::string key; /* the same on every attempt of this batch */
        bool park_always;
        Order order = Order::free;
        int attempts = 0; /* failed attempts */
        long backoff_ms = 0;
        int64_t not_before_ms = 0; /* waits for a retry until then */
        bool in_flight = false;
    };
    /* An entry refused for good: to be parked before the cursor passes it. */
    struct Parked {
        std::string entry; /* without its newline */
        int status;
        std::string response;
    };
    /* What completing a batch asks of the caller. */
    struct Outcome {
        std::vector<Parked> park;
        bool retrying = false; /* something of the batch waits for a retry */
        long delay_ms = 0;     /* ... this long */
        std::string message;   /* why */
    };

    explicit DeliveryWindow(WindowPolicy policy) : policy_(policy) {}
    /* New settings (a reload): they apply to the next answers. */
    void set_policy(WindowPolicy policy) { policy_ = policy; }

    /*
     * Add a range: its entries, as one batch, after every range added
     * before. park_always: entries refused are parked whatever the policy
     * (entries sent again from the dead letters). Returns the range's
     * sequence number. order: see Order (a batch split later keeps it, and
     * its second half waits at least for the first).
     */
    uint64_t add(std::string lines, size_t entries, std::string key, bool park_always = false,
                 Order order = Order::free);
    size_t ranges() const { return ranges_.size(); }
    /*
     * The lines of a batch done with, to be read into again: a batch's
     * pages are not given back and faulted in anew at every batch. Empty if
     * there is none. Up to kSpares are kept: batches end in bursts (two
     * answered between two reads), and one kept was not enough (perf).
     */
    std::string take_spare_lines();
    bool empty() const { return ranges_.empty(); }
    size_t in_flight() const { return in_flight_; }
    /* Batches that failed and are not yet acknowledged (waiting, or sent again). */
    size_t retrying() const;

    /*
     * The batch that goes out next once there is room, if it has never
     * been sent (a first attempt): its request may be made ahead. nth: the
     * one after it (1), and so on, while none of those was sent before.
     */
    const Batch *next_in_line(size_t nth = 0) const;
    /* The next batch to send now, or nullptr (see max_in_flight above). */
    Batch *next_to_send(int64_t now_ms, size_t max_in_flight);
    void sent(Batch *b);
    /* A batch in flight (nullptr if id is not one): what its answer is about. */
    const Batch *in_flight_batch(uint64_t id) const;
    /* The batches before batch id: 0 none left, 1 all in flight, 2 some waiting to be sent. */
    int earlier(uint64_t id) const;
    /* When a batch waiting to be sent is due (-1: none, or no room in flight for it). */
    int64_t next_due_ms(size_t max_in_flight) const;
    /* The answer to batch id came. */
    Outcome complete(uint64_t id, const Answer &answer, int64_t now_ms);
    /* A batch's request could not be made or sent: retried like a failed answer. */
    Outcome failed(uint64_t id, const std::string &message, int64_t now_ms);
    /* Remove the done ranges at the front; returns their sequence numbers, in order. */
    std::vector<uint64_t> pop_done();
    /* Forget everything (the sink is opened again, or rewound). */
    void clear();

  private:
    struct Range {
        uint64_t seq;
        size_t open; /* batches not yet done */
    };
    std::list<Batch>::iterator find(uint64_t id);
    void finish(std::list<Batch>::iterator b);
    void schedule_retry(Batch &b, long asked_ms, int64_t now_ms, Outcome *out);
    void split(std::list<Batch>::iterator b);

    WindowPolicy policy_;
    std::list<Batch> batches_; /* in order: by range, then by place in it */
    static constexpr size_t kSpares = 3;
    static constexpr size_t kSpareAtLeast = 64 * 1024; /* smaller ones cost little to make */
    std::vector<std::string> spare_lines_;             /* see take_spare_lines() */
    std::list<Range> ranges_;
    uint64_t next_id_ = 1, next_range_ = 1;
    size_t in_flight_ = 0;
    /*
     * After a failed attempt nothing else goes out before the failed batch
     * is due again: the receiver said it cannot take anything now (and with
     * Retry-After, for how long).
     */
    int64_t hold_until_ms_ = 0;
};

/* Runs the window through scripted answers; "" if all is well, else what went wrong. */
std::string delivery_window_selftest();

} // namespace pgsink
