/* resync_marker.cpp: see resync_marker.h. */
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "boundary/pg_boundary.h"
#include "decoding/resync_marker.h"
#include "spool/spool_files.h"

namespace pgsink
{

static std::string marker_path()
{
    return spool::directory() + "/resync_needed";
}

[[noreturn]] static void fail(const char *what, const std::string &path, int err)
{
    throw Error(ERRCODE_IO_ERROR,
                std::string("could not ") + what + " \"" + path + "\": " + strerror(err));
}

void write_resync_marker(const ResyncMarker &m)
{
    std::string dir = spool::directory();
    if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
        fail("create directory", dir, errno);
    std::string path = marker_path(), tmp = path + ".tmp";
    char text[512];
    int len = snprintf(text, sizeof(text), "%llX %s\n",
                       static_cast<unsigned long long>(m.lost_from), m.why);
    if (len < 0 || static_cast<size_t>(len) >= sizeof(text))
        len = static_cast<int>(sizeof(text) - 1);
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        fail("create", tmp, errno);
    ssize_t n = ::write(fd, text, static_cast<size_t>(len));
    int err = n == len ? 0 : (n < 0 ? errno : ENOSPC);
    if (err == 0 && fsync(fd) != 0)
        err = errno;
    ::close(fd);
    if (err != 0) {
        unlink(tmp.c_str());
        fail("write", tmp, err);
    }
    if (rename(tmp.c_str(), path.c_str()) != 0)
        fail("rename", tmp, errno);
    spool::sync_directory(dir);
}

bool read_resync_marker(ResyncMarker *m)
{
    FILE *f = fopen(marker_path().c_str(), "r");
    if (f == nullptr)
        return false;
    char line[512] = "";
    if (fgets(line, sizeof(line), f) == nullptr)
        line[0] = '\0';
    fclose(f);
    unsigned long long from = 0;
    int used = 0;
    if (sscanf(line, "%llX %n", &from, &used) < 1)
        used = 0;
    m->lost_from = from;
    line[strcspn(line, "\r\n")] = '\0';
    m->set_why(line[used] != '\0' ? line + used : "was lost");
    return true;
}

void remove_resync_marker()
{
    std::string path = marker_path();
    if (unlink(path.c_str()) != 0) {
        if (errno == ENOENT)
            return;
        fail("remove", path, errno);
    }
    spool::sync_directory(spool::directory());
}

} // namespace pgsink
