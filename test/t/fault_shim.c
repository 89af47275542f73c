/*
 * fault_shim.c: an LD_PRELOAD library for TAP tests that makes writes to one
 * file fail as a dying disk or a read-only remount would (EIO), so that the
 * file sink's error paths can be tested without root.
 *
 * While the file named by PGSINK_FAULT_TRIGGER exists, write()/pwrite() to
 * the file PGSINK_FAULT_TARGET write half of what they are given (a torn
 * tail) and then fail with EIO, and ftruncate() of it fails with EIO
 * (unless the trigger file holds "writes": then only writes fail). If the
 * trigger file holds "fsync", only fsync() and fdatasync() of the target
 * fail (EIO), as on a disk that loses its write cache.
 *
 * With PGSINK_FALLOCATE_ENOSPC set, fallocate() of a spool segment reserves
 * half of what it is asked for and fails with ENOSPC, as ext4 does on a
 * nearly full disk (it keeps the blocks it reserved before it ran out).
 *
 * With PGSINK_SYNC_LOG set, every fsync() or fdatasync() of a spool segment
 * or index that succeeds is logged with the file's size (see log_sync()).
 *
 * While the file named by PGSINK_FAULT_AVRO exists, avro-c refuses every
 * schema whose JSON contains the word that file holds, as it refuses an
 * invalid one: pgsink then throws a C++ exception (std::runtime_error).
 *
 * With PGSINK_SLOW_MAC set, EVP_MAC_update() is slowed down, and a process
 * that exits while a thread of its own is inside it aborts (see below).
 *
 * Everything else passes through untouched.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* What the trigger file holds ("writes", "fsync" or anything else), if it exists. */
static int trigger_mode(char *mode, size_t size)
{
    const char *trigger = getenv("PGSINK_FAULT_TRIGGER");
    FILE *f;
    size_t got;

    if (trigger == NULL || access(trigger, F_OK) != 0)
        return 0;
    mode[0] = '\0';
    if ((f = fopen(trigger, "r")) != NULL) {
        got = fread(mode, 1, size - 1, f);
        mode[got] = '\0';
        fclose(f);
    }
    return 1;
}

enum call_kind { CALL_WRITE, CALL_TRUNCATE, CALL_SYNC };

/*
 * Is fd the target file while the trigger exists, and does the trigger's
 * mode fail this kind of call? Writes fail unless the mode is "fsync";
 * ftruncate() fails unless it is "writes" (a full disk: writes fail, their
 * undo works) or "fsync"; fsync() and fdatasync() fail only with "fsync".
 */
static int targeted_call(int fd, enum call_kind kind)
{
    const char *target = getenv("PGSINK_FAULT_TARGET");
    char mode[16], link[64], path[4096];
    ssize_t n;
    int is_fsync, is_writes;

    if (target == NULL || !trigger_mode(mode, sizeof(mode)))
        return 0;
    is_fsync = strncmp(mode, "fsync", 5) == 0;
    is_writes = strncmp(mode, "writes", 6) == 0;
    if ((kind == CALL_WRITE && is_fsync) || (kind == CALL_TRUNCATE && (is_writes || is_fsync)) ||
        (kind == CALL_SYNC && !is_fsync))
        return 0;
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof(path) - 1);
    if (n < 0)
        return 0;
    path[n] = '\0';
    return strcmp(path, target) == 0;
}

static int targeted(int fd)
{
    return targeted_call(fd, CALL_WRITE);
}

ssize_t write(int fd, const void *buf, size_t count)
{
    static ssize_t (*real)(int, const void *, size_t);
    if (real == NULL)
        real = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    if (targeted(fd)) {
        if (count > 1)
            return real(fd, buf, count / 2);
        errno = EIO;
        return -1;
    }
    return real(fd, buf, count);
}

static ssize_t shim_pwrite(const char *name, int fd, const void *buf, size_t count, off_t offset)
{
    ssize_t (*real)(int, const void *, size_t, off_t) =
        (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, name);
    if (targeted(fd)) {
        if (count > 1)
            return real(fd, buf, count / 2, offset);
        errno = EIO;
        return -1;
    }
    return real(fd, buf, count, offset);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
    return shim_pwrite("pwrite", fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset)
{
    return shim_pwrite("pwrite64", fd, buf, count, offset);
}

static int shim_ftruncate(const char *name, int fd, off_t length)
{
    int (*real)(int, off_t) = (int (*)(int, off_t))dlsym(RTLD_NEXT, name);
    if (targeted_call(fd, CALL_TRUNCATE)) {
        errno = EIO;
        return -1;
    }
    return real(fd, length);
}

int ftruncate(int fd, off_t length)
{
    return shim_ftruncate("ftruncate", fd, length);
}

int ftruncate64(int fd, off_t length)
{
    return shim_ftruncate("ftruncate64", fd, length);
}

/* Is fd a spool segment (its name ends in .jsonl, in a pgsink_spool directory)? */
static int spool_segment(int fd)
{
    char link[64], path[4096];
    ssize_t n;

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof(path) - 1);
    if (n <= 6)
        return 0;
    path[n] = '\0';
    return strstr(path, "pgsink_spool") != NULL && strcmp(path + n - 6, ".jsonl") == 0;
}

static int shim_fallocate(const char *name, int fd, int mode, off_t offset, off_t len)
{
    int (*real)(int, int, off_t, off_t) = (int (*)(int, int, off_t, off_t))dlsym(RTLD_NEXT, name);
    if (getenv("PGSINK_FALLOCATE_ENOSPC") != NULL && spool_segment(fd)) {
        (void)real(fd, mode, offset, len / 2);
        errno = ENOSPC;
        return -1;
    }
    return real(fd, mode, offset, len);
}

int fallocate(int fd, int mode, off_t offset, off_t len)
{
    return shim_fallocate("fallocate", fd, mode, offset, len);
}

int fallocate64(int fd, int mode, off_t offset, off_t len)
{
    return shim_fallocate("fallocate64", fd, mode, offset, len);
}

/*
 * With PGSINK_SYNC_LOG set, each fsync()/fdatasync() that succeeds on a
 * spool segment or index appends "size path" to that log: what a power
 * loss would leave of the file (test/t/PgsinkTest.pm's spool_power_loss()
 * cuts each file back to it, dropping what was written but never synced).
 */
static void log_sync(int fd)
{
    const char *log = getenv("PGSINK_SYNC_LOG");
    char link[64], path[4096], line[4200];
    struct stat st;
    ssize_t n;
    size_t len;
    int lfd;
    static ssize_t (*real_write)(int, const void *, size_t);

    if (log == NULL)
        return;
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof(path) - 1);
    if (n < 0)
        return;
    path[n] = '\0';
    len = strlen(path);
    if (strstr(path, "/pgsink_spool/") == NULL ||
        !((len > 6 && strcmp(path + len - 6, ".jsonl") == 0) ||
          (len > 4 && strcmp(path + len - 4, ".idx") == 0)))
        return;
    if (fstat(fd, &st) != 0)
        return;
    if (real_write == NULL)
        real_write = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    n = snprintf(line, sizeof(line), "%lld %s\n", (long long)st.st_size, path);
    lfd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (lfd < 0)
        return;
    (void)real_write(lfd, line, (size_t)n);
    close(lfd);
}

static int shim_sync(const char *name, int fd)
{
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, name);
    int rc;
    if (targeted_call(fd, CALL_SYNC)) {
        errno = EIO;
        return -1;
    }
    rc = real(fd);
    if (rc == 0)
        log_sync(fd);
    return rc;
}

int fsync(int fd)
{
    return shim_sync("fsync", fd);
}

int fdatasync(int fd)
{
    return shim_sync("fdatasync", fd);
}

/* The word in the file named by PGSINK_FAULT_AVRO, if that file exists. */
static int avro_marker(char *word, size_t size)
{
    const char *path = getenv("PGSINK_FAULT_AVRO");
    FILE *f;
    size_t n;

    if (path == NULL || (f = fopen(path, "r")) == NULL)
        return 0;
    n = fread(word, 1, size - 1, f);
    fclose(f);
    while (n > 0 && (word[n - 1] == '\n' || word[n - 1] == ' '))
        n--;
    word[n] = '\0';
    return n > 0;
}

int avro_schema_from_json_length(const char *json, size_t length, void **schema)
{
    int (*real)(const char *, size_t, void **) =
        (int (*)(const char *, size_t, void **))dlsym(RTLD_NEXT, "avro_schema_from_json_length");
    char word[256];
    if (avro_marker(word, sizeof(word)) && memmem(json, length, word, strlen(word)) != NULL)
        return EINVAL;
    return real(json, length, schema);
}

/* Threads of this process inside EVP_MAC_update() (with PGSINK_SLOW_MAC). */
static int in_mac_update;

/*
 * With PGSINK_SLOW_MAC set (microseconds), every EVP_MAC_update() (the
 * webhook's HMAC, fed 64 kB at a time) first sleeps that long: signing a
 * batch then takes long enough for a test to hit it.
 */
int EVP_MAC_update(void *ctx, const unsigned char *data, size_t datalen)
{
    int (*real)(void *, const unsigned char *, size_t) =
        (int (*)(void *, const unsigned char *, size_t))dlsym(RTLD_NEXT, "EVP_MAC_update");
    const char *slow = getenv("PGSINK_SLOW_MAC");
    int rc;

    if (slow == NULL)
        return real(ctx, data, datalen);
    __atomic_add_fetch(&in_mac_update, 1, __ATOMIC_SEQ_CST);
    usleep((useconds_t)atoi(slow));
    rc = real(ctx, data, datalen);
    __atomic_sub_fetch(&in_mac_update, 1, __ATOMIC_SEQ_CST);
    return rc;
}

/*
 * A process that exits while one of its threads is inside EVP_MAC_update()
 * aborts: exit() runs OpenSSL's cleanup (atexit) under that thread, which
 * then signs with freed state, a crash that only sometimes shows.
 */
__attribute__((destructor)) static void exit_while_signing(void)
{
    if (__atomic_load_n(&in_mac_update, __ATOMIC_SEQ_CST) > 0) {
        static const char msg[] = "fault_shim: exit while a thread is inside EVP_MAC_update()\n";
        (void)!write(2, msg, sizeof(msg) - 1);
        abort();
    }
}
