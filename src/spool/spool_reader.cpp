/*
 * spool_reader.cpp: see spool_reader.h.
 */
#include <algorithm>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <memory>
#include <sys/stat.h>
#include <unistd.h>

#include "boundary/pg_boundary.h"
#include "changelog/entry_head.h"
#include "spool/spool_reader.h"

namespace pgsink::spool
{

static std::string hex(uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%016llX", static_cast<unsigned long long>(v));
    return buf;
}

Reader::~Reader()
{
    if (fd_ >= 0)
        ::close(fd_);
}

void Reader::reset()
{
    if (fd_ >= 0)
        ::close(fd_);
    fd_ = -1;
    fd_start_ = UINT64_MAX;
    segments_.clear();
}

/* The segment holding offset (or starting at it). */
const Segment &Reader::segment_of(uint64_t offset)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (attempt == 1 || segments_.empty())
            segments_ = list_segments(dir_);
        auto it = std::upper_bound(segments_.begin(), segments_.end(), offset,
                                   [](uint64_t o, const Segment &s) { return o < s.start; });
        if (it == segments_.begin())
            continue;
        const Segment &s = *(it - 1);
        /* The last segment grows: trust its listing only while offset is inside it. */
        if (it != segments_.end() || offset < s.start + s.size || attempt == 1)
            return s;
    }
    if (segments_.empty())
        throw Error(ERRCODE_UNDEFINED_FILE, "the spool in \"" + dir_ + "\" has no segments");
    throw Error(ERRCODE_UNDEFINED_FILE, "spool offset " + hex(offset) +
                                            " is no longer retained (the oldest segment "
                                            "starts at " +
                                            hex(segments_.front().start) + ")");
}

int Reader::fd_of(const Segment &s)
{
    if (fd_ >= 0 && fd_start_ == s.start)
        return fd_;
    if (fd_ >= 0)
        ::close(fd_);
    fd_start_ = UINT64_MAX;
    std::string path = segment_path(dir_, s.start);
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
        if (errno == ENOENT)
            throw Error(ERRCODE_UNDEFINED_FILE,
                        "spool segment \"" + path + "\" was removed before it was read");
        throw Error(ERRCODE_IO_ERROR, "could not open \"" + path + "\": " + errno_text(errno));
    }
    fd_start_ = s.start;
    return fd_;
}

/*
 * The newlines in [p, p + len): every piece a delivery reads is counted, and
 * a memchr() per ~300-byte line was an eighth of the file sink's delivery
 * (perf). SSE2 (every x86-64) compares 16 bytes at a time, adding the
 * matches up in byte counters that are summed before they can overflow.
 */
/* What read() reads and counts at a time (in the CPU's second-level cache). */
static constexpr size_t kCountedPiece = 256 * 1024;

uint64_t count_newlines(const char *p, size_t len)
{
    uint64_t n = 0;
    size_t i = 0;
#ifdef __SSE2__
    const __m128i nl = _mm_set1_epi8('\n');
    while (len - i >= 16) {
        __m128i sums = _mm_setzero_si128();
        /* At most 255 rounds: a byte counter holds up to 255. */
        size_t rounds = std::min<size_t>((len - i) / 16, 255);
        for (size_t r = 0; r < rounds; r++, i += 16) {
            __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p + i));
            /* A match is 0xFF, -1: subtracting it adds one. */
            sums = _mm_sub_epi8(sums, _mm_cmpeq_epi8(bytes, nl));
        }
        __m128i halves = _mm_sad_epu8(sums, _mm_setzero_si128());
        n += static_cast<uint64_t>(_mm_cvtsi128_si64(halves)) +
             static_cast<uint64_t>(_mm_cvtsi128_si64(_mm_unpackhi_epi64(halves, halves)));
    }
#endif
    for (; i < len; i++)
        n += p[i] == '\n';
    return n;
}

std::string_view Reader::read(uint64_t offset, uint64_t end, size_t max, uint64_t *lines,
                              bool *segment_end)
{
    *lines = 0;
    if (segment_end != nullptr)
        *segment_end = false;
    if (offset >= end)
        return {};
    if (buf_.size() > 2 * std::max<size_t>(max, 1 << 20))
        std::string().swap(buf_); /* a huge line grew the buffer: do not keep it */
    Segment seg = segment_of(offset);
    int fd = fd_of(seg);
    struct stat st;
    if (fstat(fd, &st) != 0)
        throw Error(ERRCODE_IO_ERROR,
                    std::string("could not stat a spool segment: ") + errno_text(errno));
    uint64_t seg_end = seg.start + static_cast<uint64_t>(st.st_size);
    if (offset == seg_end && seg_end < end) {
        /* The end of this segment: the next one starts here. */
        segments_.clear();
        seg = segment_of(offset);
        if (seg.start != offset)
            throw Error(ERRCODE_DATA_CORRUPTED, "the spool has no segment at offset " +
                                                    hex(offset) + " (a gap or a damaged spool)");
        fd = fd_of(seg);
        if (fstat(fd, &st) != 0)
            throw Error(ERRCODE_IO_ERROR,
                        std::string("could not stat a spool segment: ") + errno_text(errno));
        seg_end = seg.start + static_cast<uint64_t>(st.st_size);
    }
    uint64_t avail = std::min(end, seg_end) - std::min(offset, std::min(end, seg_end));
    if (avail == 0)
        throw Error(ERRCODE_DATA_CORRUPTED, "spool segment " + hex(seg.start) +
                                                " is shorter than the spool's durable end " +
                                                hex(end));
    size_t want = static_cast<size_t>(std::min<uint64_t>(avail, std::max<size_t>(max, 1)));
    size_t have = 0;
    size_t len = 0;
    uint64_t newlines = 0; /* in [0, have) */
    for (;;) {
        if (want > buf_.size())
            buf_.resize(want); /* zero-fills only what it adds; keeps what was read */
        /*
         * In pieces, each counted as soon as it is read, while it is in the
         * cache: counted after a whole batch was read, the batch came back
         * from memory (perf: a sixth of reading ahead).
         */
        ssize_t n = pread(fd, buf_.data() + have, std::min(want - have, kCountedPiece),
                          static_cast<off_t>(offset - seg.start + have));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            throw Error(ERRCODE_IO_ERROR,
                        std::string("could not read a spool segment: ") + errno_text(errno));
        }
        if (n == 0)
            throw Error(ERRCODE_DATA_CORRUPTED,
                        "spool segment " + hex(seg.start) + " ended before its durable end");
        newlines += count_newlines(buf_.data() + have, static_cast<size_t>(n));
        have += static_cast<size_t>(n);
        if (have < want)
            continue;
        /*
         * Whole lines up to max; past it (a line longer than max) that one
         * line alone, not the lines the bigger read also caught.
         */
        const void *last =
            want > max ? memchr(buf_.data(), '\n', have) : memrchr(buf_.data(), '\n', have);
        if (last != nullptr) {
            len = static_cast<size_t>(static_cast<const char *>(last) - buf_.data()) + 1;
            break;
        }
        /* One line longer than max: read on to its end. */
        if (want >= avail)
            throw Error(ERRCODE_DATA_CORRUPTED,
                        "spool segment " + hex(seg.start) + " holds a line without its end");
        want = static_cast<size_t>(std::min<uint64_t>(avail, static_cast<uint64_t>(want) * 2));
    }
    /* Up to the last newline read, or (a line longer than max) the first: one line. */
    *lines = want > max ? 1 : newlines;
    if (segment_end != nullptr)
        *segment_end = offset + len == seg_end && seg_end < end;
    return std::string_view(buf_.data(), len);
}

std::string Reader::take_buffer(std::string spare)
{
    buf_.swap(spare);
    return spare;
}

template <typename F> void Reader::scan(uint64_t from, uint64_t to, F &&f)
{
    uint64_t offset = from;
    while (offset < to) {
        uint64_t lines = 0;
        std::string_view buf = read(offset, to, 1 << 20, &lines);
        size_t n = buf.size();
        if (n == 0)
            return;
        size_t at = 0;
        while (at < n) {
            size_t nl = buf.find('\n', at);
            if (!f(buf.data() + at, nl - at, offset + at))
                return;
            at = nl + 1;
        }
        offset += n;
    }
}

Position Reader::oldest()
{
    segments_ = list_segments(dir_);
    if (segments_.empty())
        throw Error(ERRCODE_UNDEFINED_FILE, "the spool in \"" + dir_ + "\" has no segments");
    const Segment &s = segments_.front();
    std::vector<IndexRecord> records = read_index(index_path(dir_, s.start));
    Position p;
    p.offset = s.start;
    if (!records.empty() && records.front().offset == s.start) {
        p.entries = records.front().entries;
        p.lsn = records.front().lsn;
        p.commit_time = records.front().commit_time;
    }
    return p;
}

uint64_t Reader::lsn_at(uint64_t offset)
{
    Segment s = segment_of(offset);
    uint64_t bound = 0;
    for (const IndexRecord &r : read_index(index_path(dir_, s.start))) {
        if (r.offset > offset)
            break;
        bound = std::max<uint64_t>(bound, r.kind == kRoundEnd ? r.lsn : r.lsn + 1);
    }
    return bound;
}

Position Reader::seek(bool by_lsn, uint64_t lsn, int64_t ts, uint64_t end)
{
    segments_ = list_segments(dir_);
    if (segments_.empty())
        throw Error(ERRCODE_UNDEFINED_FILE, "the spool in \"" + dir_ + "\" has no segments");
    Position best = oldest();
    bool first = true, done = false;
    for (const Segment &s : segments_) {
        for (const IndexRecord &r : read_index(index_path(dir_, s.start))) {
            if (r.offset > end)
                break;
            if (first) {
                first = false;
                /* Entries before the oldest segment are gone, unless the spool began there. */
                if (s.start > 0 && (by_lsn ? lsn < r.lsn : ts <= r.commit_time))
                    throw Error(ERRCODE_UNDEFINED_FILE,
                                "the spool no longer holds entries that old",
                                "Raise pgsink.spool_retention to keep more; '-infinity' "
                                "rewinds to the oldest entry retained.");
            }
            bool before =
                by_lsn ? (r.kind == kTxnEnd ? r.lsn < lsn : r.lsn <= lsn) : r.commit_time < ts;
            if (!before) {
                /* Commit times are ordered only roughly: stop at the first later one. */
                done = !by_lsn;
                if (done)
                    break;
                continue;
            }
            if (r.offset > best.offset) {
                best.offset = r.offset;
                best.entries = r.entries;
                best.lsn = r.lsn;
            }
        }
        if (done)
            break;
    }
    /* From there, line by line, to the first entry at or after the target. */
    Position at = best;
    bool reached = false;
    scan(best.offset, end, [&](const char *line, size_t len, uint64_t offset) {
        uint64_t l = 0;
        int64_t t = 0;
        bool target = by_lsn ? (line_lsn(line, len, &l) && l >= lsn)
                             : (line_timestamp(line, len, &t) && t >= ts);
        at.offset = offset;
        if (target) {
            reached = true;
            return false;
        }
        at.entries++;
        return true;
    });
    if (!reached)
        at.offset = end; /* nothing that new yet: the end */
    return at;
}

Position Reader::seek_lsn(uint64_t lsn, uint64_t end)
{
    return seek(true, lsn, 0, end);
}

Position Reader::seek_time(int64_t ts, uint64_t end)
{
    return seek(false, 0, ts, end);
}

/* Schema lines in [from, to), the latest per table into m. */
void Reader::collect_schemas(uint64_t from, uint64_t to,
                             std::vector<std::pair<std::string, std::string>> &m)
{
    std::string table;
    scan(from, to, [&](const char *line, size_t len, uint64_t) {
        if (schema_line_table(line, len, &table)) {
            auto it =
                std::find_if(m.begin(), m.end(), [&](const auto &e) { return e.first == table; });
            if (it == m.end())
                m.emplace_back(table, std::string(line, len));
            else
                it->second.assign(line, len);
        }
        return true;
    });
}

/* The schemas in effect where segment i starts. */
std::vector<std::pair<std::string, std::string>> Reader::base_schemas(size_t i)
{
    std::vector<std::pair<std::string, std::string>> m;
    const Segment &s = segments_[i];
    std::string path = schemas_path(dir_, s.start);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        std::string text;
        char buf[65536];
        ssize_t n;
        while ((n = ::read(fd, buf, sizeof(buf))) > 0)
            text.append(buf, static_cast<size_t>(n));
        ::close(fd);
        std::string table;
        size_t at = 0;
        while (at < text.size()) {
            size_t nl = text.find('\n', at);
            if (nl == std::string::npos)
                break;
            if (schema_line_table(text.data() + at, nl - at, &table))
                m.emplace_back(table, text.substr(at, nl - at));
            at = nl + 1;
        }
        return m;
    }
    /* Not written (a crash while the segment was made): from the segment before, if any. */
    if (i > 0 && segments_[i - 1].start + segments_[i - 1].size == s.start) {
        m = base_schemas(i - 1);
        collect_schemas(segments_[i - 1].start, s.start, m);
    }
    return m;
}

std::string Reader::schemas_at(uint64_t offset)
{
    segments_ = list_segments(dir_);
    auto it = std::upper_bound(segments_.begin(), segments_.end(), offset,
                               [](uint64_t o, const Segment &s) { return o < s.start; });
    if (it == segments_.begin())
        return {};
    size_t i = static_cast<size_t>(it - segments_.begin()) - 1;
    std::vector<std::pair<std::string, std::string>> m = base_schemas(i);
    collect_schemas(segments_[i].start, offset, m);
    std::sort(m.begin(), m.end());
    std::string out;
    for (const auto &e : m) {
        out.append(e.second);
        out.push_back('\n');
    }
    return out;
}

} // namespace pgsink::spool
