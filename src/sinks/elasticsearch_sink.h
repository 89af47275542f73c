/*
 * elasticsearch_sink.h: captured tables kept in step in Elasticsearch
 * (pgsink.sink = 'elasticsearch'), one index per table, over HTTP.
 *
 * Each captured table <schema>.<table> is the index
 * <prefix><schema>.<table> (lower-cased; see elasticsearch_index_name()),
 * made at the table's first Schema entry with a mapping derived from it
 * (elasticsearch_field_mapping()), extended by later Schema entries, and an
 * alias <index>-live that hides tombstones. A document's _id is the row's
 * key (elasticsearch_doc_id()); every write is versioned by the change's
 * commit LSN (version_type=external_gte), so of the changes of one key
 * the newest wins whatever order they arrive in, and a change older than
 * what the index holds is refused by Elasticsearch (409), which counts as
 * delivered.
 *
 * - inserts, updates, imports: index the row; documents carry _pgsink_lsn,
 *   _pgsink_sequence, _pgsink_op, _pgsink_deleted (false) and
 *   _pgsink_timestamp;
 * - deletes (and the old key of a key change): a tombstone, the key and
 *   _pgsink_deleted = true under the delete's version: never forgotten as
 *   a delete is after index.gc_deletes, so an older change sent again
 *   later is refused for good;
 * - an update that left TOASTed columns unchanged: their values come from
 *   an earlier change of the batch, or from the document as Elasticsearch
 *   holds it (_mget, before the batch's _bulk); if that document is newer
 *   than the update, the update is skipped (it would be refused anyway);
 *   if there is none, the update is parked, saying why;
 * - TRUNCATE: the truncate's (lsn, sequence) is kept in the index mapping's
 *   _meta (pgsink.truncated), then the documents before it are removed
 *   (_delete_by_query); every later batch skips the changes before that
 *   position, so a replay never brings truncated rows back.
 * Items Elasticsearch refuses (mapping errors and other 4xx) are parked with
 * its reason; 429 and 5xx items are sent again, alone.
 *
 * Batches overlap in flight only when order_of() says they may.
 *
 * Pure C++: no PostgreSQL headers.
 */
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "sinks/sink.h"

namespace pgsink
{

struct ElasticsearchSpares; /* memory kept from one batch to the next */

class ElasticsearchSink final : public HttpSink
{
  public:
    struct Settings {
        std::string url;          /* http(s)://host:port */
        std::string index_prefix; /* "pgsink-" */
        std::string api_key;      /* "Authorization: ApiKey ..." */
        std::string user, password;
        bool json_stored = false; /* pgsink.elasticsearch_json = 'stored' */
        /*
         * The largest _bulk body for a batch of more than one change (carried
         * TOAST values can make it far larger than the batch): past it, the
         * batch is split. Under Elasticsearch's default http.max_content_length.
         */
        size_t max_bulk_bytes = 64 << 20;
        HttpOptions http;
    };
    explicit ElasticsearchSink(Settings settings);
    bool open(const Resume &from) override;
    std::unique_ptr<Exchange> exchange(std::string_view lines, const std::string &key) override;
    /* Each document read first: a change older than it holds is left out. */
    std::unique_ptr<Exchange> exchange_resent(std::string_view lines,
                                              const std::string &key) override;
    HttpOptions http_options() const override { return settings_.http; }
    /*
     * Two batches in flight by default: the next batch is encoded and sent
     * while Elasticsearch takes the one before. Versions make the writes of
     * different transactions order-free, but not every batch (order_of()).
     */
    int default_max_in_flight() const override { return 2; }
    /*
     * The _bulk body of the batch that goes out next is made on the
     * prefetch thread (http/request_prefetch.h) while the worker's thread
     * reads the spool and serves the requests in flight: an exchange takes
     * a copy of what the sink knows of the indexes when it is made (on the
     * worker's thread), plans from that copy alone in its first next(), and
     * is current() while no answer has changed what the sink knows.
     */
    bool prepares_ahead() const override { return true; }
    bool makes_every_request_ahead() const override { return true; }
    /*
     * Two at a time, each on a prefetch thread: a fresh exchange's plan
     * reads only its batch, the settings and its own copy of the indexes
     * (before_), and takes its entries' memory from the spares under their
     * lock. The encoding is the worker's longest step; two at once fill the
     * cores while the worker's thread waits on the receiver (the benchmark's
     * median 0.48x the file sink with one, 0.50x with two).
     */
    int made_ahead_at_once() const override { return 2; }
    /*
     * A batch waits for every batch before it to be done (after_previous)
     * when it shares a transaction with the batch before (its changes of a
     * key share a version: the later must land last), or reads documents
     * back (_mget of unchanged TOAST values, which a batch in flight may be
     * writing); it goes alone (nothing after it meanwhile either) when it
     * holds a TRUNCATE or resync_end (their _meta position and
     * _delete_by_query) or Schema entries (indexes made, mappings
     * extended); entries sent again from the dead letters go alone too.
     */
    Order order_of(std::string_view lines, const std::string &key, bool resent) override;
    /*
     * A batch ends at the end of its last whole transaction (unless it holds
     * only one), so that most batches share none and may overlap.
     */
    size_t batch_end(std::string_view lines) const override;
    void close() override {}
    std::string describe() const override;
    std::string state() const override;

    struct Field {
        std::string name;    /* PostgreSQL's column name: the document's field */
        std::string pg_type; /* as the Schema entry says */
        std::string mapping; /* its Elasticsearch mapping, JSON */
    };
    /* What the sink knows of a captured table's index. */
    struct Index {
        std::string name;
        std::vector<Field> fields;
        std::vector<std::string> key;
        std::string signature; /* the Schema entry's fields and key, to see a change */
        std::string refused;   /* why its changes cannot be written, or "" */
        bool ready = false;    /* made and its mapping read in this session */
        uint64_t truncated_lsn = 0, truncated_seq = 0; /* changes before it are skipped */
    };

    /* An answer's text without our secrets (a proxy may echo a request's headers). */
    std::string scrub(std::string text) const;

  private:
    std::unique_ptr<Exchange> make_exchange(std::string_view lines, const std::string &key,
                                            bool resent);
    friend class ElasticsearchExchange;
    HttpRequest request_to(const std::string &method, const std::string &path,
                           std::string body) const;

    Settings settings_;
    std::string auth_header_;
    std::map<std::string, Index> indexes_;        /* by the Schema entry's namespace */
    std::shared_ptr<ElasticsearchSpares> spares_; /* shared with the exchanges */
    /* Counts the changes of indexes_ (an exchange made from an older copy is not current()). */
    uint64_t generation_ = 0;
    /* indexes_, to change it. */
    std::map<std::string, Index> &indexes_to_change()
    {
        generation_++;
        return indexes_;
    }
    uint64_t last_lsn_ = 0; /* of the last entry of the batch order_of() saw */
};

/*
 * The index of <schema>.<table> (the Schema entry's names): prefix +
 * schema + "." + table, lower-cased. Elasticsearch wants lower case, so a
 * name that had upper case letters gets "-" and 8 hex digits of a digest
 * of the original (public.Users and public.users stay apart); one too long
 * (over 200 bytes) is cut and gets the digest too; one starting with a
 * character Elasticsearch refuses there (_ - +) gets "pgsink-" in front.
 */
std::string elasticsearch_index_name(const std::string &prefix, const std::string &schema,
                                     const std::string &table);
/* Is prefix usable in index names? "" if so, else why not. */
std::string elasticsearch_prefix_problem(const std::string &prefix);
/*
 * A document's _id from its key values (each as its text: a string's
 * content, a number's digits): one column, the text itself; several, a
 * JSON array of the texts as strings. An _id that would be longer than
 * 512 bytes, empty, or start with '#' is '#' and the SHA-256 (hex) of that
 * text instead, so no two keys share an _id.
 */
std::string elasticsearch_doc_id(const std::vector<std::string> &key_texts);
/* Checks the above and one exchange through scripted answers; "" if all is well. */
std::string elasticsearch_selftest();
/*
 * For selftests: lines' heads read compared with the line before's against
 * read in full (Elasticsearch's reading of a batch and order_of()'s
 * outline): "" if they read the same, else the first difference.
 */
std::string elasticsearch_compared_heads_problem(std::string_view lines);

/* The mapping (JSON) of a column of PostgreSQL type pg_type. */
/*
 * json_stored: json and jsonb as an object that is stored, not indexed
 * (any JSON value); else flattened (objects only, searchable).
 */
std::string elasticsearch_field_mapping(const std::string &pg_type, bool json_stored = false);

} // namespace pgsink
