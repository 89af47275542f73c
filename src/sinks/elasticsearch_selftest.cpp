/*
 * elasticsearch_selftest.cpp: the Elasticsearch sink's pure parts checked
 * without a server (pgsink._selftest_boundary('elasticsearch')): index
 * names, _ids, mappings, and one exchange driven through scripted answers
 * (what it asks, what its _bulk bodies hold, what the per-item answers
 * become).
 */
#include <deque>
#include <set>

#include "core/digest.h"
#include "sinks/elasticsearch_sink.h"

namespace pgsink
{

namespace
{
struct Check {
    std::string failures;
    void expect(bool ok, const std::string &what)
    {
        if (!ok)
            failures += (failures.empty() ? "" : "; ") + what;
    }
};

HttpResponse answer(long status, const std::string &body)
{
    HttpResponse r;
    r.status = status;
    r.body = body;
    return r;
}

bool has(const std::string &text, const std::string &piece)
{
    return text.find(piece) != std::string::npos;
}
} // namespace

std::string elasticsearch_selftest()
{
    Check c;
    /* Index names. */
    c.expect(elasticsearch_index_name("pgsink-", "public", "users") == "pgsink-public.users",
             "plain index name");
    c.expect(elasticsearch_index_name("pgsink-", "public", "Users") ==
                 "pgsink-public.users-" + sha256_hex("public.Users", 4),
             "upper case: a digest");
    c.expect(elasticsearch_index_name("", "_private", "t").rfind("pgsink-_private.t-", 0) != 0 &&
                 elasticsearch_index_name("", "_private", "t") == "pgsink-_private.t",
             "a name starting with _ gets pgsink- in front");
    std::string long_name = elasticsearch_index_name("pgsink-", "s", std::string(300, 'a'));
    c.expect(long_name.size() <= 255 && long_name.size() == 180 + 1 + 8,
             "a long name is cut, with a digest");
    c.expect(elasticsearch_prefix_problem("pgsink-").empty() &&
                 !elasticsearch_prefix_problem("PgSink").empty() &&
                 !elasticsearch_prefix_problem("-x").empty() &&
                 !elasticsearch_prefix_problem("a b").empty(),
             "prefix rules");

    /* _ids. */
    c.expect(elasticsearch_doc_id({"42"}) == "42", "one key: its text");
    c.expect(elasticsearch_doc_id({"1", "a\"b"}) == "[\"1\",\"a\\\"b\"]",
             "composite key: a JSON array of texts");
    std::string long_id = elasticsearch_doc_id({std::string(600, 'x')});
    c.expect(long_id.size() == 65 && long_id[0] == '#', "a key over 512 bytes: # and its SHA-256");
    c.expect(elasticsearch_doc_id({"#1"})[0] == '#' && elasticsearch_doc_id({"#1"}).size() == 65,
             "a key starting with # is hashed too");
    c.expect(elasticsearch_doc_id({""}).size() == 65, "an empty key is hashed");

    /* Mappings. */
    c.expect(elasticsearch_field_mapping("bigint") == R"({"type":"long"})", "bigint: long");
    c.expect(has(elasticsearch_field_mapping("numeric(12,2)"), R"("type":"keyword")"),
             "numeric: keyword");
    c.expect(has(elasticsearch_field_mapping("timestamp(3) with time zone"),
                 "strict_date_optional_time_nanos"),
             "timestamptz(3): date");
    c.expect(elasticsearch_field_mapping("integer[]") == R"({"type":"integer"})", "int[]: integer");
    c.expect(elasticsearch_field_mapping("jsonb") == R"({"type":"flattened"})" &&
                 has(elasticsearch_field_mapping("jsonb", true), R"("enabled":false)"),
             "jsonb: flattened or stored");

    /* An exchange through scripted answers. */
    ElasticsearchSink::Settings settings;
    settings.url = "http://127.0.0.1:9";
    settings.index_prefix = "pgsink-";
    settings.api_key = "a2V5OnNlY3JldA==";
    ElasticsearchSink sink(settings);
    sink.open({});
    std::string schema =
        R"({"timestamp":"T","lsn":"0/1","schema":{"namespace":"public.t","type":"record",)"
        R"("name":"value","fields":[{"name":"id","type":["long","null"],"default":null,)"
        R"("pg_type":"bigint"},{"name":"v","type":["string","null"],"default":null,)"
        R"("pg_type":"text"},{"name":"big","type":["string","null"],"default":null,)"
        R"("pg_type":"text"}],"key":["id"]}})"
        "\n";
    auto ddl = sink.exchange(schema, "k0");
    HttpRequest r = ddl->next();
    c.expect(r.method == "PUT" && has(r.url, "/pgsink-public.t") &&
                 has(r.body, R"("dynamic":"strict")") && has(r.body, R"("pgsink-public.t-live")"),
             "the index is made with a strict mapping and the alias");
    bool auth = false;
    for (const std::string &h : r.headers)
        auth = auth || h == "Authorization: ApiKey a2V5OnNlY3JldA==";
    c.expect(auth, "the API key goes in Authorization");
    c.expect(!ddl->answer(answer(400, R"({"error":{"type":"resource_already_exists_exception"}})")),
             "an index that exists is fine");
    r = ddl->next();
    c.expect(r.method == "GET" && has(r.url, "/_mapping"), "then its mapping is read");
    c.expect(!ddl->answer(answer(
                 200, R"({"pgsink-public.t":{"mappings":{"properties":{"id":{"type":"long"}},)"
                      R"("_meta":{"pgsink":{"key":["id"]}}}}})")),
             "mapping read");
    r = ddl->next();
    c.expect(r.method == "PUT" && has(r.body, R"("big")") && !has(r.body, R"("id")"),
             "only the missing fields are added");
    std::optional<Answer> a = ddl->answer(answer(200, R"({"acknowledged":true})"));
    c.expect(a && a->kind == Answer::Kind::ack && a->entries.empty(), "the Schema entry is done");

    /* An exchange reads its lines until it ends (maybe at its first next()): kept here. */
    std::deque<std::string> held;
    auto kept = [&held](std::string lines) -> const std::string & {
        held.push_back(std::move(lines));
        return held.back();
    };
    auto line = [](const char *lsn, int seq, const char *op, const std::string &rest) {
        return std::string(R"({"timestamp":"2026-01-01T00:00:00.000001+00:00","sequence":)") +
               std::to_string(seq) + R"(,"namespace":"public","name":"t","op":")" + op +
               R"(","lsn":")" + lsn + R"(","xid":1,)" + rest + "}\n";
    };
    std::string lines =
        line("0/10", 1, "insert", R"("before":null,"after":{"id":"1","v":"a","big":"B"})") +
        line("0/20", 1, "update",
             R"("before":null,"after":{"id":"1","v":"b"},"unchanged":["big"])") +
        line("0/20", 2, "update",
             R"("before":null,"after":{"id":"2","v":"c"},"unchanged":["big"])") +
        line("0/20", 3, "update",
             R"("before":null,"after":{"id":"3","v":"d"},"unchanged":["big"])") +
        line("0/20", 4, "update",
             R"("before":null,"after":{"id":"4","v":"e"},"unchanged":["big"])") +
        line("0/30", 1, "delete", R"("before":{"id":"5"},"after":null)") +
        line("0/30", 2, "update", R"("before":{"id":"6"},"after":{"id":"7","v":"f","big":"G"})") +
        line("0/40", 1, "truncate", R"("before":null,"after":null)") +
        line("0/40", 2, "insert", R"("before":null,"after":{"id":"8","v":"h","big":"H"})");
    auto ex = sink.exchange(lines, "k1");
    r = ex->next();
    c.expect(has(r.url, "/pgsink-public.t/_mget") &&
                 has(r.body, R"({"docs":[{"_id":"2","_source":["big","_pgsink_deleted",)"
                             R"("_pgsink_sequence"]},{"_id":"3","_source":["big",)"
                             R"("_pgsink_deleted","_pgsink_sequence"]},{"_id":"4",)"
                             R"("_source":["big","_pgsink_deleted","_pgsink_sequence"]}]})"),
             "_mget of the unchanged fields of the documents updates take values from");
    c.expect(!ex->answer(
                 answer(200, R"({"docs":[{"_id":"2","found":true,"_version":5,"_source":{"id":"2",)"
                             R"("v":"x","big":"OLD"}},{"_id":"3","found":false},{"_id":"4",)"
                             R"("found":true,"_version":99,"_source":{"id":"4","big":"NEW"}}]})")),
             "documents read");
    r = ex->next();
    c.expect(has(r.url, "/pgsink-public.t/_bulk?filter_path="), "one table: its index in the path");
    c.expect(has(r.body, R"({"index":{"_id":"1","version":16,"version_type":"external_gte"}})"
                         "\n"
                         R"({"id":"1","v":"a","big":"B","_pgsink_lsn":16,"_pgsink_sequence":1,)"
                         R"("_pgsink_op":"insert","_pgsink_deleted":false,)"),
             "an insert: the row as it is, versioned by its LSN");
    c.expect(has(r.body, R"({"id":"1","v":"b","big":"B","_pgsink_lsn":32)"),
             "unchanged TOAST from the batch");
    c.expect(has(r.body, R"({"id":"2","v":"c","big":"OLD","_pgsink_lsn":32)"),
             "unchanged TOAST from Elasticsearch");
    c.expect(!has(r.body, R"("id":"3")") && !has(r.body, R"("id":"4")"),
             "no document written without its value, none over a newer one");
    c.expect(has(r.body, R"({"index":{"_id":"5","version":48,"version_type":"external_gte"}})"
                         "\n"
                         R"({"id":"5","_pgsink_lsn":48,"_pgsink_sequence":1,)"
                         R"("_pgsink_op":"delete","_pgsink_deleted":true)"),
             "a delete: a tombstone");
    c.expect(has(r.body, R"({"id":"6","_pgsink_lsn":48,"_pgsink_sequence":2,)"
                         R"("_pgsink_op":"update","_pgsink_deleted":true)") &&
                 has(r.body, R"({"id":"7","v":"f","big":"G","_pgsink_lsn":48)"),
             "a key change: a tombstone of the old key, then the new");
    c.expect(!has(r.body, R"("id":"8")"), "the changes after a truncate wait for it");
    /* Items: insert 1, update 1, update 2, tombstone 5, tombstone 6, index 7. */
    c.expect(!ex->answer(answer(
                 200, R"({"errors":true,"items":[{"index":{"status":201}},)"
                      R"({"index":{"status":200}},{"index":{"status":409,"error":{"type":)"
                      R"("version_conflict_engine_exception","reason":"old"}}},)"
                      R"({"index":{"status":400,"error":{"type":"document_parsing_exception",)"
                      R"("reason":"bad value"}}},{"index":{"status":429,"error":{"type":)"
                      R"("es_rejected_execution_exception","reason":"busy"}}},)"
                      R"({"index":{"status":201}}]})")),
             "bulk answered");
    r = ex->next();
    c.expect(r.method == "PUT" && has(r.body, R"("truncated_lsn":64)") &&
                 has(r.body, R"("truncated_sequence":1)") && has(r.body, R"("key":["id"])"),
             "a truncate: its position in _meta");
    c.expect(!ex->answer(answer(200, R"({"acknowledged":true})")), "meta");
    r = ex->next();
    c.expect(has(r.url, "/_refresh"), "then a refresh");
    c.expect(!ex->answer(answer(200, "{}")), "refresh");
    r = ex->next();
    c.expect(has(r.url, "/_delete_by_query?conflicts=proceed") &&
                 has(r.body, R"({"range":{"_pgsink_lsn":{"lt":64}}})") &&
                 has(r.body, R"({"range":{"_pgsink_sequence":{"lt":1}}})"),
             "then the documents before it are deleted");
    c.expect(!ex->answer(answer(200, R"({"deleted":3,"failures":[]})")), "deleted");
    r = ex->next();
    c.expect(has(r.body, R"("id":"8")"), "the changes after the truncate");
    a = ex->answer(answer(200, R"({"errors":false,"items":[{"index":{"status":201}}]})"));
    c.expect(a && a->kind == Answer::Kind::ack, "the batch is acknowledged");
    bool e3 = false, e5 = false, e6 = false;
    for (const Answer::Entry &e : a ? a->entries : std::vector<Answer::Entry>()) {
        e3 = e3 || (e.index == 3 && !e.retry && has(e.response, "not in Elasticsearch"));
        e5 = e5 || (e.index == 5 && !e.retry && e.status == 400 &&
                    has(e.response, "document_parsing_exception: bad value"));
        e6 = e6 || (e.index == 6 && e.retry && e.status == 429);
    }
    c.expect(a && a->entries.size() == 3 && e3 && e5 && e6,
             "per entry: a missing TOAST value and a 400 parked, a 429 sent again");

    /* A replay of changes before the truncate: skipped, nothing to write. */
    auto replay = sink.exchange(
        kept(line("0/40", 0, "insert", R"("before":null,"after":{"id":"9","v":"i","big":"I"})")),
        "k2");
    r = replay->next();
    c.expect(r.method == "GET" && !has(r.url, "_bulk"), "a change before the truncate is skipped");
    a = replay->answer(answer(200, "{}"));
    c.expect(a && a->kind == Answer::Kind::ack && a->entries.empty(), "and delivered");

    /* A _bulk over max_bulk_bytes (carried TOAST values): the batch is split, unsent. */
    ElasticsearchSink::Settings small = settings;
    small.max_bulk_bytes = 100; /* less than one change: one is sent anyway */
    ElasticsearchSink tight(small);
    tight.open({});
    auto tight_ddl = tight.exchange(schema, "k4");
    for (int step = 0; step < 3; step++) {
        tight_ddl->next();
        tight_ddl->answer(answer(200, step == 1
                                          ? R"({"pgsink-public.t":{"mappings":{"properties":{}}}})"
                                          : R"({"acknowledged":true})"));
    }
    std::string two =
        line("0/60", 1, "insert", R"("before":null,"after":{"id":"11","v":"k","big":"K"})") +
        line("0/60", 2, "insert", R"("before":null,"after":{"id":"12","v":"l","big":"L"})");
    auto split = tight.exchange(two, "k5");
    r = split->next();
    c.expect(!has(r.url, "_bulk"), "a batch over max_bulk_bytes sends no _bulk");
    a = split->answer(answer(200, "{}"));
    c.expect(a && a->kind == Answer::Kind::reject && a->too_large,
             "a batch over max_bulk_bytes is split");
    auto one = tight.exchange(
        kept(line("0/60", 1, "insert", R"("before":null,"after":{"id":"11","v":"k","big":"K"})")),
        "k6");
    r = one->next();
    c.expect(has(r.url, "_bulk"), "one change is sent whatever its size");

    /* An answer that is not Elasticsearch's: retried, quoting it. */
    auto odd = sink.exchange(
        kept(line("0/50", 1, "insert", R"("before":null,"after":{"id":"10","v":"j","big":"J"})")),
        "k3");
    odd->next();
    a = odd->answer(answer(200, "<html>proxy a2V5OnNlY3JldA==</html>"));
    c.expect(a && a->kind == Answer::Kind::retry &&
                 has(a->message, "not an Elasticsearch answer") &&
                 !has(a->message, "a2V5OnNlY3JldA=="),
             "a proxy's page: retried, the key cut out");
    /*
     * A change sent again (429) never lands after a later change of its
     * document that was taken (the same version): the later goes again too.
     * Items: 20 (429), 20, tombstone 21 (429), 22, 21, 23.
     */
    std::string same =
        line("0/70", 1, "update", R"("before":{"id":"20"},"after":{"id":"20","v":"a","big":"A"})") +
        line("0/70", 2, "update", R"("before":{"id":"20"},"after":{"id":"20","v":"b","big":"B"})") +
        line("0/70", 3, "update", R"("before":{"id":"21"},"after":{"id":"22","v":"c","big":"C"})") +
        line("0/70", 4, "insert", R"("before":null,"after":{"id":"21","v":"d","big":"D"})") +
        line("0/70", 5, "insert", R"("before":null,"after":{"id":"23","v":"e","big":"E"})");
    auto again = sink.exchange(same, "k7");
    r = again->next();
    const char busy[] =
        R"({"index":{"status":429,"error":{"type":"es_rejected_execution_exception",)"
        R"("reason":"busy"}}})";
    a = again->answer(answer(200, std::string(R"({"errors":true,"items":[)") + busy +
                                      R"(,{"index":{"status":200}},)" + busy +
                                      R"(,{"index":{"status":201}},{"index":{"status":201}},)"
                                      R"({"index":{"status":201}}]})"));
    std::set<size_t> sent_again;
    for (const Answer::Entry &e : a ? a->entries : std::vector<Answer::Entry>())
        if (e.retry)
            sent_again.insert(e.index);
    c.expect(sent_again == std::set<size_t>{0, 1, 2, 3},
             "a change sent again takes the later changes of its documents with it (got " +
                 std::to_string(sent_again.size()) + ")");

    /*
     * Rows read 16 bytes at a time: escapes, quotes and brackets inside
     * strings at every place of a 16-byte block, copied exactly.
     */
    std::string tricky, rows;
    std::vector<std::string> afters;
    for (int pad = 0; pad < 34; pad++) {
        std::string after = R"({"id":")" + std::to_string(100 + pad) + R"(","v":")" +
                            std::string(static_cast<size_t>(pad), 'p') +
                            R"(\"}]{[\\\\\"","big":["a{",{"b":"]}\\"}]})";
        afters.push_back(after);
        tricky += line("0/f0", pad + 1, "insert", R"("before":null,"after":)" + after);
    }
    auto rows_ex = sink.exchange(tricky, "k11");
    r = rows_ex->next();
    bool exact = has(r.url, "_bulk");
    for (const std::string &after : afters)
        exact = exact && has(r.body, after.substr(0, after.size() - 1) + R"(,"_pgsink_lsn":240,)");
    c.expect(exact, "rows with escapes and brackets in strings are copied exactly");

    /*
     * A key change with an unchanged value sent again after a crash: the old
     * key holds the tombstone it left, the new key its document: delivered,
     * not parked for a missing value.
     */
    auto replayed = sink.exchange(
        kept(line("0/100", 3, "update",
                  R"("before":{"id":"40"},"after":{"id":"41","v":"x"},"unchanged":["big"])")),
        "k12");
    r = replayed->next();
    c.expect(has(r.url, "/_mget") && has(r.body, R"("_id":"40")") && has(r.body, R"("_id":"41")"),
             "a key change reads the old key's document and the new one's");
    a = replayed->answer(answer(
        200,
        R"({"docs":[{"_id":"40","found":true,"_version":256,"_source":{)"
        R"("_pgsink_deleted":true,"_pgsink_sequence":3}},{"_id":"41","found":true,)"
        R"("_version":256,"_source":{"big":"B","_pgsink_deleted":false,"_pgsink_sequence":3}}]})"));
    c.expect(!a, "a key change already delivered: its old key's tombstone goes again");
    if (!a) {
        r = replayed->next();
        c.expect(has(r.url, "_bulk") && has(r.body, R"("_id":"40")") &&
                     !has(r.body, R"("_id":"41")"),
                 "a key change already delivered: the old key's tombstone only, not the new "
                 "key's document");
        a = replayed->answer(
            answer(200, R"({"errors":true,"items":[{"index":{"_id":"40","status":409}}]})"));
        c.expect(a && a->kind == Answer::Kind::ack && a->entries.empty(),
                 "a key change already delivered: nothing parked");
    }

    /* Which batches may overlap in flight, and where batches end. */
    ElasticsearchSink orders(settings);
    orders.open({});
    std::string t1 = line("0/80", 1, "insert", R"("before":null,"after":{"id":"1"})") +
                     line("0/80", 2, "insert", R"("before":null,"after":{"id":"2"})");
    std::string t2 = line("0/90", 1, "insert", R"("before":null,"after":{"id":"3"})");
    c.expect(orders.order_of(schema + t1, "o1", false) == Order::alone,
             "order: Schema entries alone");
    c.expect(orders.order_of(t2, "o2", false) == Order::free,
             "order: a transaction of its own is free");
    c.expect(orders.order_of(t2, "o3", false) == Order::after_previous,
             "order: the same transaction as the batch before waits for it");
    c.expect(orders.order_of(line("0/a0", 1, "update",
                                  R"("before":null,"after":{"id":"1"},"unchanged":["big"])"),
                             "o5", false) == Order::after_previous,
             "order: reads of documents wait for those before");
    c.expect(orders.order_of(line("0/b0", 1, "truncate", R"("before":null,"after":null)"), "o6",
                             false) == Order::alone,
             "order: a truncate alone");
    c.expect(orders.order_of(t2, "o4", true) == Order::alone, "order: entries sent again alone");
    c.expect(orders.batch_end(t1 + t2) == t1.size(),
             "a batch ends after its last whole transaction");
    c.expect(orders.batch_end(t1) == t1.size(), "a batch of one transaction is whole");

    /* Lines of other kinds: their batch goes alone; an import is a change like an insert. */
    c.expect(orders.order_of(line("0/c0", 1, "resync_end", R"("before":null,"after":null)"), "o7",
                             false) == Order::alone,
             "order: a resync_end alone");
    c.expect(orders.order_of(R"({"lsn":"0/d0","timestamp":"T","sequence":1,"namespace":"public",)"
                             R"("name":"t","op":"insert","before":null,"after":{"id":"1"}})"
                             "\n",
                             "o8", false) == Order::alone,
             "order: a line laid out otherwise alone");
    c.expect(orders.order_of(line("0/e0", 1, "import", R"("before":null,"after":{"id":"1"})"), "o9",
                             false) == Order::free,
             "order: an import of a transaction of its own is free");
    /* Lines repeating the head before (one transaction, one table): read by comparing. */
    std::string upd = line("0/f0", 1, "update", R"("before":null,"after":{"id":"1"})") +
                      line("0/f0", 2, "update", R"("before":null,"after":{"id":"2"})");
    c.expect(orders.order_of(upd, "o10", false) == Order::free,
             "order: repeated heads of plain changes, free");
    c.expect(orders.order_of(line("0/f8", 1, "update", R"("before":null,"after":{"id":"1"})") +
                                 line("0/f8", 2, "update",
                                      R"("before":null,"after":{"id":"2"},"unchanged":["big"])"),
                             "o11", false) == Order::after_previous,
             "order: an unchanged TOAST column on a line with a repeated head is seen");
    c.expect(orders.order_of(line("0/fa", 1, "insert", R"("before":null,"after":{"id":"1"})") +
                                 line("0/fa", 2, "truncate", R"("before":null,"after":null)"),
                             "o12", false) == Order::alone,
             "order: a truncate after a repeated timestamp and sequence is still alone");
    /* Lines read whole: a repeated head reads as the line before's (its own sequence, before, op).
     */
    {
        auto rx =
            sink.exchange(kept(line("5/10", 1, "update", R"("before":null,"after":{"id":"51"})") +
                               line("5/10", 2, "update", R"("before":null,"after":{"id":"52"})") +
                               line("5/10", 3, "delete", R"("before":{"id":"53"},"after":null)") +
                               line("5/10", 4, "delete", R"("before":{"id":"54"},"after":null)")),
                          "o13");
        HttpRequest rr = rx->next();
        c.expect(has(rr.body, R"({"id":"52","_pgsink_lsn":21474836496,"_pgsink_sequence":2,)"
                              R"("_pgsink_op":"update","_pgsink_deleted":false)") &&
                     has(rr.body, R"({"id":"53","_pgsink_lsn":21474836496,"_pgsink_sequence":3,)"
                                  R"("_pgsink_op":"delete","_pgsink_deleted":true)") &&
                     has(rr.body, R"({"id":"54","_pgsink_lsn":21474836496,"_pgsink_sequence":4,)"
                                  R"("_pgsink_op":"delete","_pgsink_deleted":true)"),
                 "repeated heads: each line's own sequence, op and before " + rr.url + " " +
                     rr.body.substr(0, 900));
    }

    /*
     * Heads compared with the line before's (RepeatedHead, outline_of())
     * read as they read in full, whatever the lines: escapes and quotes,
     * the text ,"after": and ,"lsn": inside values, other ops, Schema
     * entries, lines laid out otherwise or cut short, no last newline.
     */
    {
        auto head = [](const std::string &ts, const std::string &seq, const std::string &ns,
                       const std::string &name, const std::string &op, const std::string &lsn,
                       const std::string &xid, const std::string &before,
                       const std::string &after) {
            return R"({"timestamp":)" + ts + R"(,"sequence":)" + seq + R"(,"namespace":)" + ns +
                   R"(,"name":)" + name + R"(,"op":)" + op + R"(,"lsn":)" + lsn + R"(,"xid":)" +
                   xid + R"(,"before":)" + before + R"(,"after":)" + after;
        };
        const std::string T = R"("2026-01-01T00:00:00.000001+00:00")";
        const std::string sch = R"({"timestamp":)" + T +
                                R"(,"schema":{"namespace":"public.t","type":"record",)"
                                R"("name":"value","fields":[],"key":["id"]}})";
        std::vector<std::string> batches = {
            "",
            head(T, "1", R"("public")", R"("t")", R"("update")", R"("0/10")", "1", "null",
                 R"({"id":"1"})") +
                "}",
            /* the same head, then a value one byte longer or shorter after it */
            head(T, "1", R"("public")", R"("t")", R"("delete")", R"("0/10")", "1", "nul", "null") +
                "}\n" +
                head(T, "2", R"("public")", R"("t")", R"("delete")", R"("0/10")", "1", "null",
                     "null") +
                "}\n" +
                head(T, "3", R"("public")", R"("t")", R"("delete")", R"("0/10")", "1", "nul",
                     "null") +
                "}\n",
            /* ,"after": and ,"lsn": inside the values of a repeated head */
            head(T, "1", R"("a,\"after\":b")", R"("x,\"lsn\":\"0/5\"")", R"("update")", R"("0/20")",
                 "1", R"({"id":"1,\"after\":"})", R"({"id":"1"})") +
                "}\n" +
                head(T, "2", R"("a,\"after\":b")", R"("x,\"lsn\":\"0/5\"")", R"("update")",
                     R"("0/20")", "1", R"({"id":"1,\"after\":"})", R"({"id":"2"})") +
                R"(,"unchanged":["big"]})" + "\n" +
                head(T, "3", R"("a,\"after\":b")", R"("x,\"lsn\":\"0/5\"")", R"("truncate")",
                     R"("0/20")", "1", "null", "null") +
                "}\n",
            /* a repeated head but for the last byte of its before */
            head(T, "1", R"("public")", R"("t")", R"("delete")", R"("0/18")", "1", "1", "null") +
                "}\n" +
                head(T, "2", R"("public")", R"("t")", R"("delete")", R"("0/18")", "1", "2",
                     "null") +
                "}\n",
            /* escapes: a quote and a backslash at the end of a repeated value */
            head(R"("t\"")", "1", R"("p\\")", R"("q\"")", R"("insert")", R"("0/30")", "1", "null",
                 R"({"v":"\\"})") +
                "}\n" +
                head(R"("t\"")", "2", R"("p\\")", R"("q\"")", R"("insert")", R"("0/30")", "1",
                     "null", R"({"v":"\""})") +
                "}\n",
            /* a Schema entry, resync entries and a line laid out otherwise between repeats */
            head(T, "1", R"("public")", R"("t")", R"("insert")", R"("0/40")", "1", "null",
                 R"({"id":"1"})") +
                "}\n" + sch + "\n" +
                head(T, "2", R"("public")", R"("t")", R"("insert")", R"("0/40")", "1", "null",
                     R"({"id":"2"})") +
                "}\n" +
                head(T, "3", R"("public")", R"("t")", R"("resync_end")", R"("0/40")", "null",
                     "null", "null") +
                R"(,"resync_since":"0/5"})" + "\n" +
                head(T, "4", R"("public")", R"("t")", R"("insert")", R"("0/40")", "1", "null",
                     R"({"id":"4"})") +
                "}\n" + R"({"lsn":"0/41","timestamp":)" + T +
                R"(,"sequence":5,"namespace":"public","name":"t","op":"insert","before":null,)"
                R"("after":{"id":"5"}})" +
                "\n" +
                head(T, "6", R"("public")", R"("t")", R"("insert")", R"("0/40")", "1", "null",
                     R"({"id":"6"})") +
                "}",
        };
        /* Batches made of such lines, the same line repeated and cut or changed a byte. */
        uint64_t seed = 88172645463325252ull;
        auto rnd = [&seed](size_t n) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            return n == 0 ? size_t(0) : static_cast<size_t>(seed % n);
        };
        auto any = [&rnd](std::initializer_list<const char *> l) {
            return std::string(l.begin()[rnd(l.size())]);
        };
        for (int b = 0; b < 1500; b++) {
            std::vector<std::string> ls;
            size_t n = 1 + rnd(6);
            for (size_t k = 0; k < n; k++) {
                std::string l;
                if (!ls.empty() && rnd(2) == 0) {
                    l = ls[rnd(ls.size())];
                    size_t from = l.find(",\"namespace\":"), to = l.find(",\"after\":");
                    if (rnd(2) == 0 && from < to && to != std::string::npos)
                        l[from + rnd(to - from)] = "0123\\\",:"[rnd(8)]; /* in its head */
                } else if (rnd(12) == 0) {
                    l = sch;
                } else {
                    l = head(any({T.c_str(), R"("T")", R"("a\"b")", "123", R"({"lsn":"0/9"})",
                                  R"( "T")", "1\"x\""}),
                             any({"1", "2", "3"}),
                             any({R"("public")", R"("a,\"after\":b")", R"("q\\")", R"("p\"")",
                                  "null", R"({"lsn":"0/7"})"}),
                             any({R"("t")", R"("x,\"lsn\":\"0/5\"")", R"("")", R"("t" )"}),
                             any({R"("insert")", R"("update")", R"("delete")", R"("import")",
                                  R"("truncate")", R"("resync_start")", R"("drop")"}),
                             any({R"("0/10")", R"("0/20")", R"("0/1,\"after\":")", "7"}),
                             any({"1", "null", R"("x")"}),
                             any({"null", R"({"id":"1"})", R"({"v":",\"after\":"})", "nul", "1",
                                  "2"}),
                             any({"null", R"({"id":"2"})", R"({"a":"}\"],"})", "1"})) +
                        any({"}", R"(,"unchanged":["big"]})", R"(,"resync_since":"0/5"})"});
                }
                if (rnd(3) == 0 && !l.empty()) { /* a byte changed, taken out or the line cut */
                    size_t at = rnd(l.size());
                    size_t how = rnd(3);
                    if (how == 0)
                        l[at] = "\",:{}[]\\ 0n"[rnd(11)];
                    else if (how == 1)
                        l.erase(at, 1);
                    else
                        l.resize(at);
                }
                ls.push_back(l);
            }
            std::string text;
            for (const std::string &l : ls)
                text += l + "\n";
            if (rnd(4) == 0)
                text.pop_back();
            batches.push_back(text);
        }
        std::string problem;
        size_t which = 0;
        for (; which < batches.size() && problem.empty(); which++)
            problem = elasticsearch_compared_heads_problem(batches[which]);
        c.expect(problem.empty(), "heads compared with the line before's read as in full (batch " +
                                      std::to_string(which - 1) + ": " + problem + ")");
        /* order_of: a truncate after a repeated head with ,"lsn": in its values is alone. */
        c.expect(orders.order_of(batches[3], "o14", false) == Order::alone,
                 "order: a truncate after heads with ,\"lsn\": in their values is alone");
        ElasticsearchSink fresh(settings); /* no batch before: only unchanged makes it wait */
        fresh.open({});
        std::string two_updates =
            batches[3].substr(0, batches[3].rfind('\n', batches[3].size() - 2) + 1);
        c.expect(fresh.order_of(two_updates, "o15", false) == Order::after_previous &&
                     fresh.order_of(head(T, "1", R"("a,\"after\":b")", R"("x,\"lsn\":\"0/5\"")",
                                         R"("update")", R"("0/28")", "1", "null", "1") +
                                        "}\n",
                                    "o16", false) == Order::free,
                 "order: unchanged TOAST after a head with ,\"lsn\": in its values is seen");
    }

    /*
     * An exchange made ahead (its _bulk made on the prefetch thread) plans
     * from what the sink knew when it was made: current() no longer once an
     * answer changed that (an index made, found missing), still after a
     * plain _bulk's.
     */
    ElasticsearchSink ahead(settings);
    ahead.open({});
    const std::string &row =
        kept(line("0/f0", 1, "insert", R"("before":null,"after":{"id":"1","v":"a","big":"B"})"));
    auto early = ahead.exchange(row, "a1");
    auto made = ahead.exchange(kept(schema), "a0");
    made->next();
    made->answer(answer(200, R"({"acknowledged":true})"));
    made->next();
    made->answer(answer(
        200, R"({"pgsink-public.t":{"mappings":{"properties":{"id":{},"v":{},"big":{}}}}})"));
    c.expect(!early->current(), "made ahead before its index was made: not current");
    auto late = ahead.exchange(row, "a2");
    auto later = ahead.exchange(row, "a3");
    c.expect(late->current(), "made after: current");
    r = late->next();
    c.expect(has(r.url, "/pgsink-public.t/_bulk") && has(r.body, R"("id":"1")"),
             "and it writes the row");
    late->answer(answer(200, R"({"errors":false,"items":[{"index":{"status":201}}]})"));
    c.expect(later->current(), "a _bulk taken changes nothing the next batch was made from");
    auto last = ahead.exchange(row, "a4");
    later->next();
    std::optional<Answer> missing = later->answer(
        answer(404, R"({"error":{"type":"index_not_found_exception"},"status":404})"));
    c.expect(missing && missing->kind == Answer::Kind::retry && !last->current(),
             "an index found missing: what was made ahead is not current");

    /* An index deleted meanwhile, found by a request other than _bulk: made again. */
    auto gone =
        sink.exchange(kept(line("0/c0", 1, "truncate", R"("before":null,"after":null)")), "k8");
    r = gone->next();
    a = gone->answer(answer(404, R"({"error":{"type":"index_not_found_exception",)"
                                 R"("reason":"no such index [pgsink-public.t]"},"status":404})"));
    c.expect(a && a->kind == Answer::Kind::retry, "a missing index: the batch is retried");
    gone = sink.exchange(kept(line("0/c0", 1, "truncate", R"("before":null,"after":null)")), "k9");
    r = gone->next();
    c.expect(r.method == "PUT" && has(r.url, "/pgsink-public.t") && has(r.body, "\"mappings\""),
             "then the index is made again first");
    auto lost =
        sink.exchange(kept(line("0/d0", 1, "update",
                                R"("before":null,"after":{"id":"1","v":"x"},"unchanged":["big"])")),
                      "k10");
    for (int step = 0; step < 2; step++) { /* the index checked again */
        lost->next();
        lost->answer(answer(200, step == 1 ? R"({"pgsink-public.t":{"mappings":{"properties":{)"
                                             R"("id":{},"v":{},"big":{}}}}})"
                                           : R"({"acknowledged":true})"));
    }
    r = lost->next();
    c.expect(has(r.url, "/_mget"), "an update with an unchanged value reads it");
    a = lost->answer(answer(200,
                            R"({"docs":[{"_index":"pgsink-public.t","_id":"1","error":{)"
                            R"("type":"index_not_found_exception","reason":"no such index"}}]})"));
    c.expect(a && a->kind == Answer::Kind::retry && a->entries.empty(),
             "a document that could not be read: retried, not parked");

    /* Our secrets echoed in an answer (a proxy's error page) are redacted. */
    ElasticsearchSink::Settings secret_settings;
    secret_settings.url = "http://url-user:url-pass-42@127.0.0.1:9";
    secret_settings.user = "elastic";
    secret_settings.password = "basic-pass-77";
    ElasticsearchSink secret_sink(secret_settings);
    std::string echoed = secret_sink.scrub(
        "Authorization: Basic ZWxhc3RpYzpiYXNpYy1wYXNzLTc3 basic-pass-77 url-user:url-pass-42 "
        "url-pass-42 dXJsLXVzZXI6dXJsLXBhc3MtNDI=");
    c.expect(echoed ==
                 "Authorization: Basic [redacted] [redacted] [redacted] [redacted] [redacted]",
             "scrub: the password, the Basic header and the URL's credentials are redacted (got " +
                 echoed + ")");

    return c.failures;
}

} // namespace pgsink
