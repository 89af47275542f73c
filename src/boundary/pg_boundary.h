/*
 * pg_boundary.h: the only way C++ and PostgreSQL errors cross each other.
 *
 * PostgreSQL reports errors with longjmp; C++ with exceptions. Neither may
 * cross the other's frames:
 *   - a longjmp over a live C++ object skips its destructor (leak, lock held);
 *   - an exception escaping into PostgreSQL's C frames aborts the process,
 *     and the postmaster then restarts the whole cluster.
 *
 * pg_call() runs PostgreSQL code from C++ and turns an ERROR into a PgError
 * exception. cxx_entry() runs C++ code from a PostgreSQL entry point and turns
 * any exception back into an ERROR, after every C++ object is destroyed.
 */
#pragma once

#include <exception>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

extern "C" {
#include "postgres.h"
#include "utils/elog.h"
#include "utils/memutils.h"
}

namespace pgsink
{

/* A PostgreSQL ERROR caught by pg_call(), carried as a C++ exception. */
class PgError : public std::exception
{
  public:
    explicit PgError(ErrorData *edata) : edata_(edata) {}
    ErrorData *data() const noexcept { return edata_; }
    const char *what() const noexcept override
    {
        return edata_ && edata_->message ? edata_->message : "PostgreSQL error";
    }

  private:
    ErrorData *edata_; /* palloc'd copy, in the caller's memory context */
};

/* An error raised by pgsink's C++ code, with the SQLSTATE and hint to report. */
class Error : public std::exception
{
  public:
    Error(int sqlstate, std::string message, std::string hint = {})
        : sqlstate_(sqlstate), message_(std::move(message)), hint_(std::move(hint))
    {
    }
    int sqlstate() const noexcept { return sqlstate_; }
    const std::string &hint() const noexcept { return hint_; }
    const char *what() const noexcept override { return message_.c_str(); }

  private:
    int sqlstate_;
    std::string message_;
    std::string hint_;
};

/*
 * Run f, which calls PostgreSQL, and convert an ERROR it raises into PgError.
 * f must not own non-trivial C++ objects itself: a longjmp out of f skips
 * f's own destructors (it stops at this frame, so the caller's are safe).
 */
void pg_call_void(void (*fn)(void *), void *arg);

template <typename F> auto pg_call(F &&f) -> decltype(f())
{
    using R = decltype(f());
    if constexpr (std::is_void_v<R>) {
        pg_call_void([](void *p) { (*static_cast<std::remove_reference_t<F> *>(p))(); },
                     static_cast<void *>(&f));
    } else {
        R result{};
        auto assign = [&]() { result = f(); };
        pg_call_void([](void *p) { (*static_cast<decltype(assign) *>(p))(); },
                     static_cast<void *>(&assign));
        return result;
    }
}

/* Report a caught exception as a PostgreSQL ERROR. Never returns. */
[[noreturn]] void raise_caught(ErrorData *pg, int sqlstate, const char *message, const char *hint);

/*
 * Run f, which is C++, from a PostgreSQL entry point (SQL function, callback,
 * worker main). An exception becomes an ERROR raised after the catch scope,
 * so no C++ object is alive when PostgreSQL longjmps.
 */
template <typename F> auto cxx_entry(F &&f) -> decltype(f())
{
    ErrorData *pg = nullptr;
    int sqlstate = ERRCODE_INTERNAL_ERROR;
    char message[1024];
    char hint[512];
    message[0] = hint[0] = '\0';
    try {
        return f();
    } catch (const PgError &e) {
        pg = e.data();
    } catch (const Error &e) {
        sqlstate = e.sqlstate();
        strlcpy(message, e.what(), sizeof(message));
        strlcpy(hint, e.hint().c_str(), sizeof(hint));
    } catch (const std::bad_alloc &) {
        sqlstate = ERRCODE_OUT_OF_MEMORY;
        strlcpy(message, "out of memory", sizeof(message));
    } catch (const std::exception &e) {
        strlcpy(message, e.what(), sizeof(message));
    } catch (...) {
        strlcpy(message, "unknown C++ exception", sizeof(message));
    }
    raise_caught(pg, sqlstate, message, hint);
}

} // namespace pgsink
