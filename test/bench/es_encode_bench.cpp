/*
 * es_encode_bench.cpp: the Elasticsearch sink's own encoding measured alone
 * (no server, no PostgreSQL): a 70,000-row batch of the benchmark's rows
 * (elasticsearch_bench.sh's table) read (order_of) and made into its _bulk
 * body (exchange, next), 15 times; prints the best thread CPU time a row.
 * Build and run from the repository's top:
 *   S=src; g++ -O2 -std=c++17 -I$S test/bench/es_encode_bench.cpp \
 *     $S/sinks/elasticsearch_sink.cpp $S/sinks/elasticsearch_names.cpp \
 *     $S/sinks/http_sink.cpp $S/changelog/raw_json.cpp $S/changelog/avro_schema.cpp \
 *     $S/changelog/json_writer.cpp $S/changelog/entry_head.cpp $S/changelog/civil_date.cpp \
 *     $S/core/digest.cpp $S/http/redact.cpp \
 *     $S/http/http_pipeline.cpp $S/http/delivery_window.cpp -lcurl -lcrypto -lavro -lz \
 *     -o /tmp/es_encode_bench && /tmp/es_encode_bench
 */
#include <chrono>
#include <ctime>
static double cpu_us()
{
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}
#include <cstdio>
#include <string>
#include "sinks/elasticsearch_sink.h"
using namespace pgsink;
static HttpResponse ans(long st, const std::string &b)
{
    HttpResponse r;
    r.status = st;
    r.body = b;
    return r;
}
int main()
{
    ElasticsearchSink::Settings st;
    st.url = "http://127.0.0.1:9";
    st.index_prefix = "pgsink-";
    ElasticsearchSink sink(st);
    sink.open({});
    std::string schema =
        R"J({"timestamp":"2026-11-30T21:34:26.651503+00:00","lsn":"0/19F3F80","schema":{"namespace":"public.bench_rows","type":"record","name":"value","fields":[{"name":"id","type":["string","null"],"default":null,"pg_type":"bigint"},{"name":"account","type":["int","null"],"default":null,"pg_type":"integer"},{"name":"note","type":["string","null"],"default":null,"pg_type":"text"},{"name":"amount","type":["string","null"],"default":null,"pg_type":"numeric(12,2)"},{"name":"created","type":["string","null"],"default":null,"pg_type":"timestamp with time zone"}],"key":["id"]},"relid":16509})J"
        "\n";
    auto ddl = sink.exchange(schema, "s");
    ddl->next();
    ddl->answer(ans(200, "{}"));
    ddl->next();
    ddl->answer(ans(
        200,
        R"({"pgsink-public.bench_rows":{"mappings":{"properties":{"id":{},"account":{},"note":{},"amount":{},"created":{}}}}})"));
    std::string lines;
    for (int i = 1; i <= 70000; i++) {
        char buf[512];
        snprintf(
            buf, sizeof buf,
            R"({"timestamp":"2026-11-30T21:34:26.651503+00:00","sequence":%d,"namespace":"public","name":"bench_rows","op":"insert","lsn":"0/%X","xid":728,"before":null,"after":{"id":"%d","account":%d,"note":"note number %d","amount":"%d.25","created":"2026-11-30T21:34:26.642704+00:00"}})"
            "\n",
            i % 1000 + 1, 0x19F3F80 + (i / 1000) * 0x100, i, i % 1000, i, i);
        lines += buf;
    }
    double best = 1e9;
    for (int rep = 0; rep < 15; rep++) {
        double t0 = cpu_us();
        std::string key = "k" + std::to_string(rep);
        sink.order_of(lines, key, false);
        auto ex = sink.exchange(lines, key);
        HttpRequest r = ex->next();
        double t1 = cpu_us();
        double us = (t1 - t0) / 70000;
        if (us < best)
            best = us;
        if (rep == 0 && r.body.size() < 1000)
            printf("bad %s\n", r.url.c_str());
    }
    printf("best %.3f us/row\n", best);
}
