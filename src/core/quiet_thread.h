/*
 * quiet_thread.h: a thread that may run inside a PostgreSQL backend.
 *
 * PostgreSQL's signal handlers (SIGTERM, SIGHUP, SIGUSR1 for latches) must
 * run in the backend's own thread: a handler run in another thread would
 * set flags and latches under the backend's feet. So every signal is
 * blocked in the new thread from its first instruction (the mask is
 * inherited at creation). Such a thread never calls PostgreSQL.
 */
#pragma once
#include <pthread.h>
#include <signal.h>
#include <thread>
#include <utility>

namespace pgsink
{

template <typename F> std::thread quiet_thread(F &&f)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    try {
        std::thread t(std::forward<F>(f));
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
        return t;
    } catch (...) {
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
        throw;
    }
}

} // namespace pgsink
