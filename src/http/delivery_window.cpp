/*
 * delivery_window.cpp: see delivery_window.h.
 */
#include <algorithm>
#include <stdexcept>

#include "http/delivery_window.h"

namespace pgsink
{

/* The byte just after the n-th line of lines (n >= 1). */
static size_t after_lines(std::string_view lines, size_t n)
{
    size_t at = 0;
    for (size_t i = 0; i < n && at < lines.size(); i++) {
        size_t nl = lines.find('\n', at);
        at = nl == std::string_view::npos ? lines.size() : nl + 1;
    }
    return at;
}

uint64_t DeliveryWindow::add(std::string lines, size_t entries, std::string key, bool park_always,
                             Order order)
{
    uint64_t seq = next_range_++;
    ranges_.push_back(Range{seq, 1});
    Batch b;
    b.id = next_id_++;
    b.range = seq;
    b.lines = std::move(lines);
    b.entries = entries;
    b.key = std::move(key);
    b.park_always = park_always;
    b.order = order;
    batches_.push_back(std::move(b));
    return seq;
}

size_t DeliveryWindow::retrying() const
{
    size_t n = 0;
    for (const Batch &b : batches_)
        n += b.attempts > 0;
    return n;
}

/*
 * Calls f(batch) for each batch not in flight that may go out when it is
 * due, in order, until f returns true (see Order in delivery_window.h).
 */
template <typename L, typename F> static void eligible(L &batches, size_t max, F f)
{
    bool before = false; /* a batch before is not done */
    for (auto &b : batches) {
        if (!b.in_flight) {
            if (before && (max <= 1 || b.order != Order::free))
                return; /* it waits for those before, and keeps those after back */
            if (f(b))
                return;
        }
        if (max <= 1 || b.order == Order::alone)
            return; /* in order: nothing passes it */
        before = true;
    }
}

DeliveryWindow::Batch *DeliveryWindow::next_to_send(int64_t now_ms, size_t max_in_flight)
{
    if (in_flight_ >= std::max<size_t>(max_in_flight, 1) || now_ms < hold_until_ms_)
        return nullptr;
    Batch *found = nullptr;
    eligible(batches_, max_in_flight, [&](Batch &b) {
        if (b.not_before_ms <= now_ms)
            found = &b;
        return found != nullptr;
    });
    return found;
}

const DeliveryWindow::Batch *DeliveryWindow::next_in_line(size_t nth) const
{
    for (const Batch &b : batches_) {
        if (b.in_flight)
            continue;
        if (b.attempts != 0)
            return nullptr;
        if (nth-- == 0)
            return &b;
    }
    return nullptr;
}

void DeliveryWindow::sent(Batch *b)
{
    b->in_flight = true;
    in_flight_++;
}

const DeliveryWindow::Batch *DeliveryWindow::in_flight_batch(uint64_t id) const
{
    for (const Batch &b : batches_)
        if (b.id == id && b.in_flight)
            return &b;
    return nullptr;
}

int DeliveryWindow::earlier(uint64_t id) const
{
    int out = 0;
    for (const Batch &b : batches_) {
        if (b.id == id)
            break;
        out = std::max(out, b.in_flight ? 1 : 2);
    }
    return out;
}

int64_t DeliveryWindow::next_due_ms(size_t max_in_flight) const
{
    /* Nothing can go out before an answer frees a place: the sockets wake the caller. */
    if (in_flight_ >= std::max<size_t>(max_in_flight, 1))
        return -1;
    int64_t due = -1;
    eligible(batches_, max_in_flight, [&](const Batch &b) {
        if (due < 0 || b.not_before_ms < due)
            due = b.not_before_ms;
        return false;
    });
    return due < 0 ? -1 : std::max(due, hold_until_ms_);
}

std::list<DeliveryWindow::Batch>::iterator DeliveryWindow::find(uint64_t id)
{
    auto it =
        std::find_if(batches_.begin(), batches_.end(), [id](const Batch &b) { return b.id == id; });
    if (it == batches_.end() || !it->in_flight)
        throw std::logic_error("pgsink: an answer for a batch that is not in flight");
    it->in_flight = false;
    in_flight_--;
    return it;
}

/* Batch b is delivered or parked. */
void DeliveryWindow::finish(std::list<Batch>::iterator b)
{
    for (Range &r : ranges_)
        if (r.seq == b->range) {
            r.open--;
            break;
        }
    if (spare_lines_.size() < kSpares && b->lines.capacity() >= kSpareAtLeast &&
        b->lines.capacity() <= policy_.spare_at_most)
        spare_lines_.push_back(std::move(b->lines));
    batches_.erase(b);
}

std::string DeliveryWindow::take_spare_lines()
{
    std::string s;
    if (!spare_lines_.empty()) {
        s.swap(spare_lines_.back());
        spare_lines_.pop_back();
    }
    return s;
}

/* Exponential back-off with full jitter; a longer Retry-After wins, up to the most. */
void DeliveryWindow::schedule_retry(Batch &b, long asked_ms, int64_t now_ms, Outcome *out)
{
    b.attempts++;
    b.backoff_ms =
        b.attempts == 1 ? policy_.first_retry_ms : std::min(b.backoff_ms * 2, policy_.max_retry_ms);
    double r = policy_.random ? policy_.random() : 0.5;
    long delay = 1 + static_cast<long>(r * static_cast<double>(b.backoff_ms));
    /* Never less than the jittered back-off: "Retry-After: 0" must not make a hot loop. */
    if (asked_ms > delay)
        delay = std::min(asked_ms, policy_.max_retry_ms);
    b.not_before_ms = now_ms + delay;
    hold_until_ms_ = std::max(hold_until_ms_, b.not_before_ms);
    out->retrying = true;
    out->delay_ms = delay;
}

/* Replace b by its two halves (by entries), in place; both are due at once. */
void DeliveryWindow::split(std::list<Batch>::iterator b)
{
    size_t half = b->entries / 2;
    size_t cut = after_lines(b->lines, half);
    Batch second;
    second.id = next_id_++;
    second.range = b->range;
    second.lines = b->lines.substr(cut);
    second.entries = b->entries - half;
    second.key = b->key + "b";
    second.park_always = b->park_always;
    /* The halves of a batch may share a transaction: the second waits for the first. */
    second.order = b->order == Order::alone ? Order::alone : Order::after_previous;
    b->lines.resize(cut);
    b->entries = half;
    b->key += "a";
    b->id = next_id_++; /* a late answer to the whole batch matches neither half */
    b->attempts = 0;
    b->backoff_ms = 0;
    b->not_before_ms = 0;
    batches_.insert(std::next(b), std::move(second));
    for (Range &r : ranges_)
        if (r.seq == b->range) {
            r.open++;
            break;
        }
}

DeliveryWindow::Outcome DeliveryWindow::complete(uint64_t id, const Answer &answer, int64_t now_ms)
{
    Outcome out;
    auto b = find(id);
    bool park = !policy_.stop_on_rejection || b->park_always;
    switch (answer.kind) {
    case Answer::Kind::retry:
        out.message = answer.message;
        schedule_retry(*b, answer.retry_after_ms, now_ms, &out);
        return out;
    case Answer::Kind::reject:
        if (b->entries > 1 && (park || answer.too_large)) {
            split(b);
            return out;
        }
        if (!park || b->entries == 0) {
            /* Held: pgsink.on_rejection = 'stop' (or nothing to park). */
            out.message = answer.message + (park ? ""
                                                 : " (pgsink.on_rejection = 'stop' holds "
                                                   "the sink until the receiver takes it)");
            schedule_retry(*b, answer.retry_after_ms, now_ms, &out);
            return out;
        }
        out.park.push_back(
            Parked{b->lines.substr(0, b->lines.size() - 1), answer.status, answer.response});
        finish(b);
        return out;
    case Answer::Kind::ack:
        break;
    }
    if (answer.entries.empty()) {
        finish(b);
        return out;
    }
    /* Some entries were not taken: park the refused, send the others again. */
    std::vector<bool> again(b->entries, false);
    std::vector<const Answer::Entry *> by_index(b->entries, nullptr);
    for (const Answer::Entry &e : answer.entries)
        if (e.index < b->entries)
            by_index[e.index] = &e;
    std::string retry_lines;
    size_t retry_count = 0, at = 0;
    for (size_t i = 0; i < b->entries && at < b->lines.size(); i++) {
        size_t nl = b->lines.find('\n', at);
        size_t end = nl == std::string::npos ? b->lines.size() : nl + 1;
        const Answer::Entry *e = by_index[i];
        if (e != nullptr && (e->retry || !park)) {
            retry_lines.append(b->lines, at, end - at);
            retry_count++;
            if (out.message.empty())
                out.message = answer.message + (e->retry ? "" : " (pgsink.on_rejection = 'stop')");
        } else if (e != nullptr) {
            out.park.push_back(Parked{b->lines.substr(at, end - at - 1), e->status, e->response});
        }
        at = end;
    }
    if (retry_count == 0) {
        finish(b);
        return out;
    }
    /* What is left of the batch waits for its retry, as a batch of its own. */
    b->lines.swap(retry_lines);
    b->entries = retry_count;
    b->key += "r" + std::to_string(b->attempts);
    b->id = next_id_++;
    schedule_retry(*b, answer.retry_after_ms, now_ms, &out);
    return out;
}

DeliveryWindow::Outcome DeliveryWindow::failed(uint64_t id, const std::string &message,
                                               int64_t now_ms)
{
    Outcome out;
    auto b = find(id);
    out.message = message;
    schedule_retry(*b, -1, now_ms, &out);
    return out;
}

std::vector<uint64_t> DeliveryWindow::pop_done()
{
    std::vector<uint64_t> done;
    while (!ranges_.empty() && ranges_.front().open == 0) {
        done.push_back(ranges_.front().seq);
        ranges_.pop_front();
    }
    return done;
}

void DeliveryWindow::clear()
{
    hold_until_ms_ = 0;
    batches_.clear();
    ranges_.clear();
    in_flight_ = 0;
}

/* ---------------------------------------------------------------- selftest */

namespace
{
struct Check {
    std::string failures;
    void expect(bool ok, const char *what)
    {
        if (!ok)
            failures += std::string(failures.empty() ? "" : "; ") + what;
    }
};

Answer ack()
{
    return Answer{};
}
Answer reject(bool too_large = false)
{
    Answer a;
    a.kind = Answer::Kind::reject;
    a.status = too_large ? 413 : 400;
    a.too_large = too_large;
    a.message = "refused";
    return a;
}
Answer retry(long after_ms = -1)
{
    Answer a;
    a.kind = Answer::Kind::retry;
    a.status = 503;
    a.retry_after_ms = after_ms;
    a.message = "unavailable";
    return a;
}
double half()
{
    return 0.5;
}
} // namespace

std::string delivery_window_selftest()
{
    Check c;
    WindowPolicy policy;
    policy.random = half;
    policy.first_retry_ms = 100;
    policy.max_retry_ms = 1000;

    /* Made ahead: the batches in line after the one in flight, in order. */
    {
        DeliveryWindow w(policy);
        w.add("a\n", 1, "k1");
        w.add("b\n", 1, "k2");
        w.add("c\n", 1, "k3");
        auto *b = w.next_to_send(0, 1);
        w.sent(b);
        c.expect(w.next_in_line(0) != nullptr && w.next_in_line(0)->key == "k2" &&
                     w.next_in_line(1) != nullptr && w.next_in_line(1)->key == "k3" &&
                     w.next_in_line(2) == nullptr,
                 "made ahead: second and third in line");
    }
    /* In order (max 1): a failed batch goes again before the next; cursor by prefix. */
    {
        DeliveryWindow w(policy);
        uint64_t r1 = w.add("a\nb\n", 2, "k1"), r2 = w.add("c\n", 1, "k2");
        auto *b = w.next_to_send(0, 1);
        c.expect(b != nullptr && b->key == "k1", "ordered: first batch first");
        w.sent(b);
        c.expect(w.next_to_send(0, 1) == nullptr, "ordered: one in flight");
        c.expect(w.next_in_line() != nullptr && w.next_in_line()->key == "k2",
                 "made ahead: the batch after the one in flight");
        c.expect(w.next_in_line(1) == nullptr, "made ahead: nothing after the last");
        auto o = w.complete(b->id, retry(), 0);
        c.expect(o.retrying && o.delay_ms == 51, "retry: jittered back-off of 100 ms");
        c.expect(w.next_in_line() == nullptr, "made ahead: nothing while a retry is next");
        c.expect(w.next_in_line(1) == nullptr,
                 "made ahead: nothing after a retry either (it goes first)");
        c.expect(w.next_to_send(10, 1) == nullptr, "ordered: the next waits for the retry");
        c.expect(w.next_due_ms(1) == 51, "retry due time");
        b = w.next_to_send(60, 1);
        c.expect(b != nullptr && b->key == "k1", "retry sends the same batch, same key");
        w.sent(b);
        o = w.complete(b->id, retry(5000), 60);
        c.expect(o.delay_ms == 1000, "Retry-After capped at the most");
        b = w.next_to_send(2000, 1);
        w.sent(b);
        w.complete(b->id, ack(), 2000);
        auto done = w.pop_done();
        c.expect(done.size() == 1 && done[0] == r1, "first range done");
        b = w.next_to_send(2000, 1);
        w.sent(b);
        w.complete(b->id, ack(), 2000);
        done = w.pop_done();
        c.expect(done.size() == 1 && done[0] == r2 && w.empty(), "second range done");
    }
    /* Several in flight: the cursor waits for the contiguous prefix. */
    {
        DeliveryWindow w(policy);
        w.add("a\n", 1, "k1");
        w.add("b\n", 1, "k2");
        w.add("c\n", 1, "k3");
        auto *b1 = w.next_to_send(0, 3);
        w.sent(b1);
        auto *b2 = w.next_to_send(0, 3);
        w.sent(b2);
        auto *b3 = w.next_to_send(0, 3);
        w.sent(b3);
        c.expect(w.in_flight() == 3 && w.next_to_send(0, 3) == nullptr, "three in flight");
        c.expect(w.earlier(b1->id) == 0 && w.earlier(b3->id) == 1,
                 "earlier: none before the first; all in flight before the third");
        w.add("d\n", 1, "k4");
        c.expect(w.next_due_ms(3) == -1, "full: no timer while all places are taken");
        uint64_t id1 = b1->id, id2 = b2->id, id3 = b3->id;
        w.complete(id3, ack(), 0);
        w.complete(id2, ack(), 0);
        c.expect(w.pop_done().empty(), "no prefix while the first is out");
        w.complete(id1, ack(), 0);
        c.expect(w.pop_done().size() == 3, "all three once the first is acknowledged");
    }
    /* A failed batch holds the others back until it is due (the receiver is down). */
    {
        DeliveryWindow w(policy);
        w.add("a\n", 1, "k1");
        w.add("b\n", 1, "k2");
        auto *b1 = w.next_to_send(0, 4);
        w.sent(b1);
        auto o = w.complete(b1->id, retry(300), 0);
        c.expect(o.delay_ms == 300, "Retry-After longer than the back-off wins");
        c.expect(w.next_to_send(100, 4) == nullptr, "held: nothing goes out meanwhile");
        c.expect(w.next_due_ms(4) == 300, "held until the failed batch is due");
        auto *b = w.next_to_send(300, 4);
        c.expect(b != nullptr && b->key == "k1", "then the failed batch first");
    }
    /* What the batches before one are doing (for an exchange that reads what they wrote). */
    {
        DeliveryWindow w(policy);
        w.add("a\n", 1, "k1");
        w.add("b\n", 1, "k2");
        auto *b1 = w.next_to_send(0, 4);
        w.sent(b1);
        auto *b2 = w.next_to_send(0, 4);
        w.sent(b2);
        c.expect(w.earlier(b1->id) == 0 && w.earlier(b2->id) == 1,
                 "earlier: none before the first, the first in flight before the second");
        w.complete(b1->id, retry(300), 0);
        c.expect(w.earlier(b2->id) == 2, "earlier: the first waits for a retry");
        w.complete(b2->id, ack(), 0);
        auto *b = w.next_to_send(300, 4);
        w.sent(b);
        w.complete(b->id, ack(), 300);
        c.expect(w.pop_done().size() == 2 && w.empty(), "both done");
    }
    /* Bisection: only the refused entry is parked, the rest delivered. */
    {
        DeliveryWindow w(policy);
        w.add("a\nb\nBAD\nd\n", 4, "k");
        std::vector<std::string> parked;
        for (int guard = 0; !w.empty() && guard < 20; guard++) {
            auto *b = w.next_to_send(0, 1);
            if (b == nullptr)
                break;
            w.sent(b);
            bool bad = b->lines.find("BAD") != std::string::npos;
            auto o = w.complete(b->id, bad ? reject() : ack(), 0);
            for (auto &p : o.park)
                parked.push_back(p.entry);
            w.pop_done();
        }
        c.expect(w.empty() && parked.size() == 1 && parked[0] == "BAD",
                 "bisection isolates the refused entry");
    }
    /* stop_on_rejection: held, not split; but too large still splits. */
    {
        WindowPolicy stop = policy;
        stop.stop_on_rejection = true;
        DeliveryWindow w(stop);
        w.add("a\nb\n", 2, "k");
        auto *b = w.next_to_send(0, 1);
        w.sent(b);
        auto o = w.complete(b->id, reject(), 0);
        c.expect(o.retrying && o.park.empty() && w.ranges() == 1, "stop holds the batch");
        b = w.next_to_send(1000, 1);
        c.expect(b != nullptr && b->entries == 2, "stop: the whole batch again");
        w.sent(b);
        o = w.complete(b->id, reject(true), 1000);
        b = w.next_to_send(1000, 1);
        c.expect(b != nullptr && b->entries == 1 && b->lines == "a\n", "413 splits under stop");
    }
    /* Per-entry answers: refused entries parked, retryable ones sent again alone. */
    {
        DeliveryWindow w(policy);
        w.add("a\nb\nc\n", 3, "k");
        auto *b = w.next_to_send(0, 1);
        w.sent(b);
        Answer a;
        a.entries.push_back(Answer::Entry{0, false, 400, "mapping"});
        a.entries.push_back(Answer::Entry{2, true, 429, "busy"});
        auto o = w.complete(b->id, a, 0);
        c.expect(o.park.size() == 1 && o.park[0].entry == "a" && o.park[0].response == "mapping",
                 "per-entry: refused parked");
        c.expect(o.retrying && w.pop_done().empty(), "per-entry: the range waits");
        b = w.next_to_send(1000, 1);
        c.expect(b != nullptr && b->lines == "c\n" && b->entries == 1,
                 "per-entry: only the retryable entry again");
        w.sent(b);
        w.complete(b->id, ack(), 1000);
        c.expect(w.pop_done().size() == 1, "per-entry: done after the retry");
    }
    /*
     * Orders (several in flight): a batch that depends on those before waits
     * until they are done, retries included, and keeps later ones back; one
     * alone also keeps every later one back until it is done.
     */
    {
        DeliveryWindow w(policy);
        w.add("a\n", 1, "k1");
        w.add("b\n", 1, "k2", false, Order::after_previous);
        w.add("c\n", 1, "k3");
        w.add("d\n", 1, "k4", false, Order::alone);
        w.add("e\n", 1, "k5");
        auto *b = w.next_to_send(0, 4);
        c.expect(b != nullptr && b->key == "k1", "order: the first goes out");
        w.sent(b);
        uint64_t id1 = b->id;
        c.expect(w.next_to_send(0, 4) == nullptr, "order: after_previous waits for the one before");
        c.expect(w.next_due_ms(4) == -1, "order: no timer while it waits for an answer");
        w.complete(id1, ack(), 0);
        b = w.next_to_send(0, 4);
        c.expect(b != nullptr && b->key == "k2",
                 "order: after_previous once those before are done");
        w.sent(b);
        uint64_t id2 = b->id;
        b = w.next_to_send(0, 4);
        c.expect(b != nullptr && b->key == "k3", "order: a free batch overlaps");
        w.sent(b);
        uint64_t id3 = b->id;
        c.expect(w.next_to_send(0, 4) == nullptr, "order: alone waits for those before");
        w.complete(id3, ack(), 0);
        c.expect(w.next_to_send(0, 4) == nullptr, "order: alone waits for every one before");
        w.complete(id2, ack(), 0);
        b = w.next_to_send(0, 4);
        c.expect(b != nullptr && b->key == "k4", "order: alone once all before are done");
        w.sent(b);
        uint64_t id4 = b->id;
        c.expect(w.next_to_send(0, 4) == nullptr, "order: nothing passes a batch alone");
        w.complete(id4, ack(), 0);
        b = w.next_to_send(0, 4);
        c.expect(b != nullptr && b->key == "k5", "order: the next after the one alone is done");
        w.sent(b);
        w.complete(b->id, ack(), 0);
        c.expect(w.pop_done().size() == 5 && w.empty(), "order: all done");
    }
    /* A per-entry retry keeps a batch of the same transaction back until it is delivered. */
    {
        DeliveryWindow w(policy);
        w.add("a\nb\n", 2, "k1");
        w.add("c\n", 1, "k2", false, Order::after_previous);
        auto *b = w.next_to_send(0, 4);
        w.sent(b);
        Answer a;
        a.entries.push_back(Answer::Entry{1, true, 429, "busy"});
        auto o = w.complete(b->id, a, 0);
        c.expect(o.retrying, "order: the entry waits for its retry");
        c.expect(w.next_to_send(1000, 4) != nullptr && w.next_to_send(1000, 4)->lines == "b\n",
                 "order: the retried entry first");
        b = w.next_to_send(1000, 4);
        w.sent(b);
        c.expect(w.next_to_send(1000, 4) == nullptr,
                 "order: the batch after waits for the retry to be answered");
        a.entries.clear();
        w.complete(b->id, a, 1000);
        b = w.next_to_send(1000, 4);
        c.expect(b != nullptr && b->key == "k2", "order: then the batch after");
    }
    /* The second half of a split batch waits for the first (they may share a transaction). */
    {
        DeliveryWindow w(policy);
        w.add("a\nb\n", 2, "k1");
        w.add("c\n", 1, "k2");
        auto *b = w.next_to_send(0, 4);
        w.sent(b);
        w.complete(b->id, reject(true), 0);
        b = w.next_to_send(0, 4);
        c.expect(b != nullptr && b->lines == "a\n", "split: the first half");
        w.sent(b);
        c.expect(w.next_to_send(0, 4) == nullptr, "split: the second half waits for the first");
        w.complete(b->id, ack(), 0);
        b = w.next_to_send(0, 4);
        c.expect(b != nullptr && b->lines == "b\n", "split: then the second half");
    }
    /* A batch done with is kept for the next read, unless a huge line made it huge. */
    {
        WindowPolicy small = policy;
        small.spare_at_most = 1 << 20;
        DeliveryWindow w(small);
        w.add(std::string(100 * 1024 - 1, 'x') + "\n", 1, "k1");
        w.add(std::string(3 << 20, 'y') + "\n", 1, "k2");
        for (int i = 0; i < 2; i++) {
            auto *b = w.next_to_send(0, 1);
            w.sent(b);
            w.complete(b->id, ack(), 0);
        }
        std::string spare = w.take_spare_lines();
        c.expect(spare.capacity() >= 100 * 1024 && spare.capacity() <= small.spare_at_most,
                 "spares: a batch of its usual size is kept");
        c.expect(w.take_spare_lines().capacity() < 64 * 1024,
                 "spares: a batch past spare_at_most is not kept");
    }
    return c.failures;
}

} // namespace pgsink
