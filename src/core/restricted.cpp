/*
 * restricted.cpp: see restricted.h.
 */
#include "core/restricted.h"

extern "C" {
#include "miscadmin.h"
#include "utils/guc.h"
}

namespace pgsink
{

RestrictedContext enter_restricted(Oid role, bool no_row_security)
{
    RestrictedContext saved;
    GetUserIdAndSecContext(&saved.saved_userid, &saved.saved_sec_context);
    /* GUCs first, while we still may set them; undone with the nest level. */
    saved.guc_level = NewGUCNestLevel();
    (void)set_config_option("search_path", kSafeSearchPath, PGC_SUSET, PGC_S_SESSION,
                            GUC_ACTION_SAVE, true, 0, false);
    if (no_row_security)
        (void)set_config_option("row_security", "off", PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE,
                                true, 0, false);
    SetUserIdAndSecContext(OidIsValid(role) ? role : saved.saved_userid,
                           saved.saved_sec_context | SECURITY_LOCAL_USERID_CHANGE |
                               SECURITY_RESTRICTED_OPERATION);
    return saved;
}

void leave_restricted(const RestrictedContext &saved)
{
    SetUserIdAndSecContext(saved.saved_userid, saved.saved_sec_context);
    /*
     * Roll back every setting changed at this level, ours and any the
     * owner's code made (a domain check can call set_config()): nothing of
     * it may outlive the restricted operation in the superuser's session,
     * as after vacuum, index builds and REFRESH MATERIALIZED VIEW.
     */
    AtEOXact_GUC(false, saved.guc_level);
}

void pin_session_search_path()
{
    SetConfigOption("search_path", kSafeSearchPath, PGC_SUSET, PGC_S_OVERRIDE);
}

} // namespace pgsink
