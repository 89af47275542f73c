/*
 * config.cpp: definition and validation of pgsink's GUCs.
 *
 * Every setting is PGC_SIGHUP unless changing it while running would strand
 * resources (the slot name: a renamed slot would leave the old one holding
 * WAL), and every string has a check hook that says what a valid value is.
 */
#include <cstring>

#include "core/config.h"

extern "C" {
#include "access/xlog.h"
#include "replication/logical.h"
#include "utils/guc.h"
#include "utils/varlena.h"
#include "nodes/pg_list.h"
}

namespace pgsink
{

char *guc_database = nullptr;
int guc_sink = SINK_FILE;
char *guc_file_path = nullptr;
char *guc_slot_name = nullptr;
int guc_batch_rows = 10000;
int guc_batch_bytes_kb = 16 * 1024;
int guc_flush_interval_ms = 200;
int guc_poll_interval_ms = 20;
int guc_retry_max_interval_ms = 60000;
int guc_import_chunk_rows = 20000;
int guc_import_chunk_time_ms = 100;

static const struct config_enum_entry sink_options[] = {
    {"file", SINK_FILE, false},
    {nullptr, 0, false},
};

/* pgsink.database: a database name, which must fit in NAMEDATALEN. */
static bool check_database(char **newval, void **extra, GucSource source)
{
    if (*newval == nullptr || (*newval)[0] == '\0') {
        GUC_check_errdetail("pgsink.database must name the database whose tables are captured.");
        return false;
    }
    if (strlen(*newval) >= NAMEDATALEN) {
        GUC_check_errdetail("Database names are at most %d bytes long.", NAMEDATALEN - 1);
        return false;
    }
    return true;
}

/*
 * pgsink.slot_name: the rules of ReplicationSlotValidateName, checked here
 * without ereport so that a bad value is refused at load time.
 */
static bool check_slot_name(char **newval, void **extra, GucSource source)
{
    const char *name = *newval;
    if (name == nullptr || name[0] == '\0') {
        GUC_check_errdetail("pgsink.slot_name must not be empty.");
        return false;
    }
    if (strlen(name) >= NAMEDATALEN) {
        GUC_check_errdetail("Replication slot names are at most %d bytes long.", NAMEDATALEN - 1);
        return false;
    }
    for (const char *p = name; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) {
            GUC_check_errdetail(
                "Replication slot names may only contain lower case letters, digits and "
                "underscores.");
            return false;
        }
    }
    return true;
}

/* pgsink.file_path: a file, absolute or relative to the data directory. */
static bool check_file_path(char **newval, void **extra, GucSource source)
{
    const char *path = *newval;
    if (path == nullptr || path[0] == '\0') {
        GUC_check_errdetail("pgsink.file_path must name the file changes are appended to.");
        return false;
    }
    size_t len = strlen(path);
    if (path[len - 1] == '/') {
        GUC_check_errdetail("pgsink.file_path must name a file, not a directory.");
        return false;
    }
    if (len >= MAXPGPATH) {
        GUC_check_errdetail("pgsink.file_path is longer than %d bytes.", MAXPGPATH - 1);
        return false;
    }
    return true;
}

void define_gucs()
{
    DefineCustomStringVariable(
        "pgsink.database", "Database whose tables pgsink captures.",
        "The stream worker connects to this database; pgsink waits for it and for CREATE "
        "EXTENSION pgsink in it.",
        &guc_database, "postgres", PGC_SIGHUP, 0, check_database, nullptr, nullptr);

    DefineCustomEnumVariable("pgsink.sink", "Where captured changes are delivered.", nullptr,
                             &guc_sink, SINK_FILE, sink_options, PGC_SIGHUP, 0, nullptr, nullptr,
                             nullptr);

    DefineCustomStringVariable("pgsink.file_path", "File the file sink appends JSON lines to.",
                               "Absolute, or relative to the data directory.", &guc_file_path,
                               "pgsink.jsonl", PGC_SIGHUP, GUC_SUPERUSER_ONLY, check_file_path,
                               nullptr, nullptr);

    DefineCustomStringVariable(
        "pgsink.slot_name", "Logical replication slot pgsink consumes.",
        "Created by the stream worker if missing. Changing it needs a restart, so that no "
        "abandoned slot keeps holding WAL unnoticed.",
        &guc_slot_name, "pgsink", PGC_POSTMASTER, 0, check_slot_name, nullptr, nullptr);

    DefineCustomIntVariable("pgsink.batch_rows", "Changes buffered before a batch is flushed.",
                            nullptr, &guc_batch_rows, 10000, 1, 1000000, PGC_SIGHUP, 0, nullptr,
                            nullptr, nullptr);

    DefineCustomIntVariable("pgsink.batch_bytes", "Bytes buffered before a batch is flushed.",
                            "Bounds the stream worker's memory together with the largest row.",
                            &guc_batch_bytes_kb, 16 * 1024, 64, 1024 * 1024, PGC_SIGHUP,
                            GUC_UNIT_KB, nullptr, nullptr, nullptr);

    DefineCustomIntVariable(
        "pgsink.flush_interval", "Longest time a change waits in a batch before it is flushed.",
        "When the stream is caught up, batches are flushed at once.", &guc_flush_interval_ms, 200,
        1, 60000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);

    DefineCustomIntVariable("pgsink.poll_interval", "How often an idle stream looks for new WAL.",
                            nullptr, &guc_poll_interval_ms, 20, 1, 10000, PGC_SIGHUP, GUC_UNIT_MS,
                            nullptr, nullptr, nullptr);

    DefineCustomIntVariable("pgsink.retry_max_interval",
                            "Longest back-off between retries of a failing sink or worker.",
                            nullptr, &guc_retry_max_interval_ms, 60000, 100, 3600000, PGC_SIGHUP,
                            GUC_UNIT_MS, nullptr, nullptr, nullptr);

    DefineCustomIntVariable("pgsink.import_chunk_rows", "Most rows an import reads per chunk.",
                            "Each chunk is one short transaction.", &guc_import_chunk_rows, 20000,
                            100, 1000000, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);

    DefineCustomIntVariable(
        "pgsink.import_chunk_time", "Time an import chunk should take to read.",
        "The chunk size adapts to it, so a large import does not delay streamed changes.",
        &guc_import_chunk_time_ms, 100, 10, 60000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr,
        nullptr);

    MarkGUCPrefixReserved("pgsink");
}

/* Does output_plugin_libraries allow the library named "pgsink"? */
static bool output_plugin_allowed()
{
    if (output_plugin_libraries_string == nullptr)
        return true;
    char *raw = pstrdup(output_plugin_libraries_string);
    List *names = NIL;
    bool allowed = false;
    if (SplitDirectoriesString(raw, ',', &names)) {
        ListCell *lc;
        foreach (lc, names) {
            const char *name = static_cast<const char *>(lfirst(lc));
            const char *base = strrchr(name, '/');
            base = base ? base + 1 : name;
            if (strcmp(base, "pgsink") == 0 || strcmp(base, "pgsink.so") == 0)
                allowed = true;
        }
    }
    list_free_deep(names);
    pfree(raw);
    return allowed;
}

const char *server_config_problem()
{
    if (wal_level < WAL_LEVEL_LOGICAL)
        return "wal_level must be \"logical\" for pgsink to capture changes: set wal_level = "
               "logical in postgresql.conf and restart the server";
    if (!output_plugin_allowed())
        return "output_plugin_libraries does not include pgsink: add it in postgresql.conf "
               "(for example output_plugin_libraries = 'pgoutput, test_decoding, pgsink') and "
               "reload";
    return nullptr;
}

} // namespace pgsink
