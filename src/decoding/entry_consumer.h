/*
 * entry_consumer.h: where the output plugin puts changelog entries.
 *
 * In the stream worker, a batch on its way to the spool; under the SQL
 * interface (pg_logical_slot_get_changes with plugin pgsink), the rows that
 * function returns.
 */
#pragma once

#include <string>

extern "C" {
#include "postgres.h"
#include "access/transam.h"
#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
}

namespace pgsink
{

struct TxnMeta {
    XLogRecPtr commit_lsn = InvalidXLogRecPtr; /* start of the commit record */
    TransactionId xid = InvalidTransactionId;
    TimestampTz commit_time = 0;
};

class EntryConsumer
{
  public:
    virtual ~EntryConsumer() = default;
    /* The buffer the next entry is appended to (one JSON object, no newline). */
    virtual std::string &buffer() = 0;
    /* One entry of table relid was appended to buffer(). May flush a partial batch. */
    virtual void entry_done(Oid relid) = 0;
    /* The entry appended was a Schema entry (it is done as entry_done() says). */
    virtual void schema_done() { entry_done(InvalidOid); }
    /* A transaction that produced entries committed. */
    virtual void commit(const TxnMeta &txn, uint64 entries) = 0;
};

/* Set by the stream worker before it creates its decoding context. */
extern EntryConsumer *worker_consumer;

} // namespace pgsink
