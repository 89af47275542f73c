/*
 * secret_log.cpp: no secret setting reaches the server log.
 *
 * GUC_SUPERUSER_ONLY hides a setting from other roles, but PostgreSQL
 * itself logs a reloaded value ('parameter "x" changed to "..."'), a
 * refused one ('invalid value for parameter "x": "..."'), and, with
 * log_statement, the ALTER SYSTEM that set it. This emit_log_hook,
 * installed in the postmaster (and so in every process), cuts every
 * message, detail and statement that names a secret setting and then
 * quotes or assigns something, right after the name.
 *
 * Which settings are secret is read from their flags (every pgsink setting
 * defined GUC_NO_SHOW_ALL: credentials, URLs that may carry one, a key
 * file's path), so a setting added later cannot be left off a list.
 */
#include <cctype>
#include <cstddef>
#include <cstring>
#include <strings.h>

#include "core/config.h"

extern "C" {
#include "postgres.h"
#include "tcop/tcopprot.h"
#include "utils/elog.h"
#include "utils/guc_tables.h"
#include "utils/memutils.h"
}

namespace pgsink
{

static emit_log_hook_type prev_emit_log_hook = nullptr;

/*
 * The secret settings, by the part of their name after "pgsink.": matched
 * without regard to case, so that SQL spellings (PGSINK.WEBHOOK_SECRET,
 * "pgsink"."webhook_secret") are caught too. Filled once by
 * install_secret_redaction(), in the postmaster, and inherited.
 */
static constexpr int kMaxSecretSettings = 32;
static const char *secret_settings[kMaxSecretSettings];
static int n_secret_settings = 0;

/* Is c part of an SQL word (a keyword, an identifier, an unquoted value)? */
static bool word_char(char c)
{
    unsigned char u = static_cast<unsigned char>(c);
    return u >= 0x80 || isalnum(u) || c == '_' || c == '$';
}

/*
 * Does text (what follows a secret setting's name) quote or assign a value?
 * A quote or '=' (PostgreSQL's messages, SQL), a dollar quote, or the word
 * TO followed by anything but DEFAULT: SQL takes a value without quotes
 * (ALTER SYSTEM SET x TO word, SET x TO 12345), and the statement logged by
 * log_statement or under an ERROR (STATEMENT:) holds no quote then.
 */
static bool assigns(const char *text)
{
    if (strpbrk(text, "\"'=$") != nullptr)
        return true;
    for (const char *p = text; (p = strcasestr(p, "to")) != nullptr; p += 2) {
        if ((p > text && word_char(p[-1])) || word_char(p[2]))
            continue;
        const char *v = p + 2;
        while (*v != '\0' && !word_char(*v))
            v++;
        if (*v != '\0' && !(strncasecmp(v, "default", 7) == 0 && !word_char(v[7])))
            return true;
    }
    return false;
}

/*
 * Is the name at `at` pgsink's own mention of the setting, "(pgsink.x)",
 * as in "the key file (pgsink.bigquery_credentials) has no \"private_key\""?
 * No value follows it there: what comes next is not taken for one.
 */
static bool named_in_passing(const char *text, const char *at, size_t len)
{
    static const char kOpen[] = "(pgsink.";
    size_t n = sizeof(kOpen) - 1;
    return at - text >= static_cast<ptrdiff_t>(n) && strncasecmp(at - n, kOpen, n) == 0 &&
           at[len] == ')';
}

/* text, cut after the first secret setting's name it holds; nullptr if it holds none. */
static char *redacted(const char *text)
{
    if (text == nullptr)
        return nullptr;
    const char *cut = nullptr;
    for (int i = 0; i < n_secret_settings; i++) {
        const char *name = secret_settings[i];
        size_t len = strlen(name);
        for (const char *at = text; (at = strcasestr(at, name)) != nullptr; at += len) {
            if (cut != nullptr && at >= cut)
                break;
            if (!named_in_passing(text, at, len)) {
                cut = at + len;
                break;
            }
        }
    }
    if (cut == nullptr)
        return nullptr;
    /* Keep a closing quote right after the name ("parameter \"x\" ..."). */
    if (*cut == '"')
        cut++;
    /* pgsink's own messages about a setting never quote or assign its value. */
    if (!assigns(cut))
        return nullptr;
    return psprintf("%.*s (value not shown: a secret)", static_cast<int>(cut - text), text);
}

static void redact_secrets(ErrorData *edata)
{
    MemoryContext old = MemoryContextSwitchTo(ErrorContext);
    if (char *m = redacted(edata->message))
        edata->message = m;
    if (char *d = redacted(edata->detail))
        edata->detail = d;
    if (char *d = redacted(edata->detail_log))
        edata->detail_log = d;
    if (char *h = redacted(edata->hint))
        edata->hint = h;
    if (char *c = redacted(edata->context))
        edata->context = c;
    if (char *q = redacted(edata->internalquery))
        edata->internalquery = q;
    /* The statement logged with the message (STATEMENT:) may set a secret too. */
    if (debug_query_string != nullptr && redacted(debug_query_string) != nullptr)
        edata->hide_stmt = true;
    MemoryContextSwitchTo(old);
    if (prev_emit_log_hook)
        prev_emit_log_hook(edata);
}

void install_secret_redaction()
{
    static const char kPrefix[] = "pgsink.";
    struct config_generic **gucs = get_guc_variables();
    for (int i = 0; i < GetNumConfigOptions(); i++) {
        const struct config_generic *g = gucs[i];
        if ((g->flags & GUC_NO_SHOW_ALL) == 0 ||
            strncmp(g->name, kPrefix, sizeof(kPrefix) - 1) != 0)
            continue;
        if (n_secret_settings == kMaxSecretSettings)
            elog(ERROR, "pgsink: more secret settings than the log redaction holds");
        secret_settings[n_secret_settings++] =
            MemoryContextStrdup(TopMemoryContext, g->name + sizeof(kPrefix) - 1);
    }
    prev_emit_log_hook = emit_log_hook;
    emit_log_hook = redact_secrets;
}

} // namespace pgsink
