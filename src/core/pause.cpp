/* pause.cpp: see pause.h. */
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <unistd.h>

#include "boundary/pg_boundary.h"
#include "core/config.h"
#include "core/pause.h"
#include "spool/spool_files.h"

extern "C" {
#include "utils/timestamp.h"
}

namespace pgsink
{

/* A sink name as pgsink.sink spells them: lower-case letters, digits, underscores. */
static bool plain_name(const char *s)
{
    if (*s == '\0' || strlen(s) >= NAMEDATALEN)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

void load_pause_state(PauseState *p)
{
    memset(p, 0, sizeof(*p));
    FILE *f = fopen(kPauseFile, "r");
    if (f == nullptr)
        return;
    char line[256];
    int n = 0;
    while (fgets(line, sizeof(line), f) != nullptr) {
        char name[NAMEDATALEN + 1];
        long long since = 0;
        if (sscanf(line, "decoding %lld", &since) == 1 && since != 0) {
            p->decoding_since = since;
        } else if (sscanf(line, "sink %63s %lld", name, &since) == 2 && plain_name(name) &&
                   since != 0 && n < kMaxSinks) {
            strlcpy(p->sinks[n].name, name, NAMEDATALEN);
            p->sinks[n].since = since;
            n++;
        } else if (line[0] != '\n' && line[0] != '#') {
            ereport(WARNING, (errmsg("pgsink: ignoring a malformed line of \"%s\"", kPauseFile),
                              errdetail("The line: %.80s", line)));
        }
    }
    fclose(f);
}

static std::string pause_file_text(const PauseState &p)
{
    std::string text = "# pgsink.pause() state: written by pgsink, use pgsink.resume()\n";
    char line[128];
    if (p.decoding_since != 0) {
        snprintf(line, sizeof(line), "decoding %lld\n", static_cast<long long>(p.decoding_since));
        text += line;
    }
    for (const auto &s : p.sinks)
        if (s.name[0] != '\0') {
            snprintf(line, sizeof(line), "sink %s %lld\n", s.name, static_cast<long long>(s.since));
            text += line;
        }
    return text;
}

[[noreturn]] static void fail(const char *what, const std::string &path, int err)
{
    throw Error(ERRCODE_IO_ERROR,
                std::string("could not ") + what + " \"" + path + "\": " + strerror(err));
}

/* Replace the file durably: a temporary file, fsynced, renamed over it, the directory fsynced. */
static void write_pause_file(const std::string &text)
{
    std::string tmp = std::string(kPauseFile) + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        fail("create", tmp, errno);
    ssize_t n = ::write(fd, text.data(), text.size());
    int err = errno;
    if (n != static_cast<ssize_t>(text.size()) || fsync(fd) != 0) {
        err = n >= 0 && n != static_cast<ssize_t>(text.size()) ? ENOSPC : errno;
        ::close(fd);
        unlink(tmp.c_str());
        fail("write", tmp, err);
    }
    ::close(fd);
    if (rename(tmp.c_str(), kPauseFile) != 0)
        fail("rename", tmp, errno);
    try {
        spool::sync_directory(".");
    } catch (const Error &e) {
        /* In place already: a crash before the directory reaches the disk may undo it. */
        ereport(WARNING, (errmsg("pgsink: %s", e.what())));
    }
}

bool set_paused(const char *sink, bool paused)
{
    TimestampTz now = GetCurrentTimestamp();
    LWLockAcquire(pause_lock, LW_EXCLUSIVE);
    LWLockAcquire(shared_lock, LW_SHARED);
    PauseState p = shared->pause;
    LWLockRelease(shared_lock);

    bool changed = false;
    if (sink == nullptr) {
        changed = (p.decoding_since != 0) != paused;
        if (changed)
            p.decoding_since = paused ? now : 0;
    } else {
        /* Pauses of sinks no longer in pgsink.sink give their place up to a new one. */
        if (paused)
            for (auto &e : p.sinks)
                if (e.name[0] != '\0' && strcmp(e.name, sink) != 0 && !sink_configured(e.name)) {
                    e.name[0] = '\0';
                    e.since = 0;
                }
        int found = -1, free_slot = -1;
        for (int i = 0; i < kMaxSinks; i++) {
            if (strcmp(p.sinks[i].name, sink) == 0)
                found = i;
            else if (p.sinks[i].name[0] == '\0' && free_slot < 0)
                free_slot = i;
        }
        if (paused && found < 0 && free_slot >= 0) {
            strlcpy(p.sinks[free_slot].name, sink, NAMEDATALEN);
            p.sinks[free_slot].since = now;
            changed = true;
        } else if (!paused && found >= 0) {
            p.sinks[found].name[0] = '\0';
            p.sinks[found].since = 0;
            changed = true;
        }
    }
    if (changed) {
        try {
            write_pause_file(pause_file_text(p));
        } catch (...) {
            LWLockRelease(pause_lock);
            throw;
        }
        LWLockAcquire(shared_lock, LW_EXCLUSIVE);
        shared->pause = p;
        LWLockRelease(shared_lock);
    }
    LWLockRelease(pause_lock);
    if (changed) {
        wake_worker();
        wake_delivery_workers();
    }
    return changed;
}

TimestampTz decoding_paused_since()
{
    LWLockAcquire(shared_lock, LW_SHARED);
    TimestampTz since = shared->pause.decoding_since;
    LWLockRelease(shared_lock);
    return since;
}

TimestampTz sink_paused_since(const char *sink)
{
    TimestampTz since = 0;
    LWLockAcquire(shared_lock, LW_SHARED);
    for (const auto &s : shared->pause.sinks)
        if (s.name[0] != '\0' && strcmp(s.name, sink) == 0)
            since = s.since;
    LWLockRelease(shared_lock);
    return since;
}

} // namespace pgsink
