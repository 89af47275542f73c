/*
 * spool_files.cpp: see spool_files.h.
 */
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <system_error>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "boundary/pg_boundary.h"
#include "core/config.h"
#include "spool/spool_files.h"

extern "C" {
#include "port/pg_crc32c.h"
}

namespace pgsink::spool
{

std::string directory()
{
    return guc_spool_directory;
}

static std::string named(const std::string &dir, uint64_t start, const char *ext)
{
    char name[64];
    snprintf(name, sizeof(name), "/%016llX%s", static_cast<unsigned long long>(start), ext);
    return dir + name;
}

std::string segment_path(const std::string &dir, uint64_t start)
{
    return named(dir, start, ".jsonl");
}

std::string index_path(const std::string &dir, uint64_t start)
{
    return named(dir, start, ".idx");
}

std::string schemas_path(const std::string &dir, uint64_t start)
{
    return named(dir, start, ".schemas");
}

std::string cursor_path(const std::string &dir, const std::string &sink)
{
    return dir + "/sinks/" + sink + ".cursor";
}

std::vector<Segment> list_segments(const std::string &dir)
{
    std::vector<Segment> segments;
    DIR *d = opendir(dir.c_str());
    if (d == nullptr) {
        if (errno == ENOENT)
            return segments;
        throw Error(ERRCODE_IO_ERROR,
                    "could not open spool directory \"" + dir + "\": " + errno_text(errno));
    }
    while (struct dirent *e = readdir(d)) {
        const char *name = e->d_name;
        if (strlen(name) != 16 + 6 || strcmp(name + 16, ".jsonl") != 0)
            continue;
        char *end = nullptr;
        unsigned long long start = strtoull(name, &end, 16);
        if (end != name + 16)
            continue;
        struct stat st;
        if (stat((dir + "/" + name).c_str(), &st) != 0)
            continue; /* removed meanwhile */
        Segment s;
        s.start = start;
        s.size = static_cast<uint64_t>(st.st_size);
        s.mtime = static_cast<int64_t>(st.st_mtime);
        segments.push_back(s);
    }
    closedir(d);
    std::sort(segments.begin(), segments.end(),
              [](const Segment &a, const Segment &b) { return a.start < b.start; });
    return segments;
}

static uint32_t record_crc(const IndexRecord &r)
{
    pg_crc32c crc;
    INIT_CRC32C(crc);
    COMP_CRC32C(crc, &r, offsetof(IndexRecord, crc));
    FIN_CRC32C(crc);
    return crc;
}

IndexRecord make_record(RecordKind kind, uint64_t offset, uint64_t entries, uint64_t lsn,
                        int64_t commit_time)
{
    IndexRecord r;
    memset(&r, 0, sizeof(r));
    r.offset = offset;
    r.entries = entries;
    r.lsn = lsn;
    r.commit_time = commit_time;
    r.kind = kind;
    r.crc = record_crc(r);
    return r;
}

bool intact(const IndexRecord &r)
{
    return r.crc == record_crc(r) && (r.kind == kRoundEnd || r.kind == kTxnEnd);
}

std::vector<IndexRecord> read_index(const std::string &path)
{
    std::vector<IndexRecord> records;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return records;
        throw Error(ERRCODE_IO_ERROR, "could not open \"" + path + "\": " + errno_text(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        ::close(fd);
        throw Error(ERRCODE_IO_ERROR, "could not stat \"" + path + "\": " + errno_text(err));
    }
    size_t n = static_cast<size_t>(st.st_size) / sizeof(IndexRecord);
    records.resize(n);
    ssize_t got = n ? pread(fd, records.data(), n * sizeof(IndexRecord), 0) : 0;
    int err = errno;
    ::close(fd);
    if (got < 0)
        throw Error(ERRCODE_IO_ERROR, "could not read \"" + path + "\": " + errno_text(err));
    records.resize(static_cast<size_t>(got) / sizeof(IndexRecord));
    uint64_t last = 0;
    for (size_t i = 0; i < records.size(); i++) {
        if (!intact(records[i]) || records[i].offset < last) {
            records.resize(i);
            break;
        }
        last = records[i].offset;
    }
    return records;
}

uint64_t read_identity(const std::string &dir)
{
    FILE *f = fopen((dir + "/identity").c_str(), "r");
    if (f == nullptr)
        return 0;
    unsigned long long id = 0;
    if (fscanf(f, "%llx", &id) != 1)
        id = 0;
    fclose(f);
    return id;
}

void sync_directory(const std::string &dir)
{
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        throw Error(ERRCODE_IO_ERROR,
                    "could not open directory \"" + dir + "\": " + errno_text(errno));
    int rc = fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0)
        throw Error(ERRCODE_IO_ERROR,
                    "could not fsync directory \"" + dir + "\": " + errno_text(err));
}

std::string errno_text(int err)
{
    return std::system_category().message(err);
}

} // namespace pgsink::spool
