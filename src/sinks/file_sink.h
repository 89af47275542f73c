/*
 * file_sink.h: JSON lines appended to a file, fsynced before its cursor is
 * saved, exactly once across crashes.
 */
#pragma once

#include <sys/types.h>

#include "sinks/sink.h"

namespace pgsink
{

class FileSink final : public AppendSink
{
  public:
    explicit FileSink(std::string path) : path_(std::move(path)) {}
    ~FileSink() override;
    bool open(const Resume &from) override;
    void write(const char *data, size_t len) override;
    void sync() override;
    void close() override;
    /* The file's identity and size: open() cuts the file back to it. */
    std::string state() const override;
    std::string describe() const override { return "file \"" + path_ + "\""; }
    /*
     * Was the file moved, deleted or truncated since the last round? A moved
     * or deleted file is closed (everything in it is confirmed), and the
     * next open() starts a new file at the path.
     */
    Notice between_rounds() override;

  private:
    enum class Fate { same, moved, deleted, truncated };
    Fate fate() const;
    [[noreturn]] void fail(const std::string &what, int err, bool retryable);
    /* Cut entries at or after replay_from, and any torn last line. */
    void truncate_replayed(uint64_t replay_from);
    /* Cut the file back to cut bytes (what was written after the cursor was saved). */
    void truncate_to(off_t cut);
    void sync_directory();
    uint32_t tail_checksum(off_t size) const;

    std::string path_;
    int fd_ = -1;
    off_t size_ = 0; /* bytes in the file that are whole lines we wrote */
    bool dirty_ = false;
    bool recovered_ = false;
    dev_t dev_ = 0; /* the file we opened, to notice it being moved or deleted */
    ino_t ino_ = 0;
};

} // namespace pgsink
