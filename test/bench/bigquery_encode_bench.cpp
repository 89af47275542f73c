/*
 * bigquery_encode_bench.cpp: see bigquery_encode_bench.sh. Arguments: the
 * directory holding key.json and batch.jsonl, the batch's rows, rounds.
 */
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>
#include <vector>

#include "sinks/bigquery_sink.h"

using namespace pgsink;

static double cpu_ms()
{
    timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s DIR ROWS ROUNDS\n", argv[0]);
        return 2;
    }
    std::string dir = argv[1];
    double rows = atof(argv[2]);
    int rounds = std::max(2, atoi(argv[3]));
    std::ifstream in(dir + "/batch.jsonl");
    std::stringstream ss;
    ss << in.rdbuf();
    std::string lines = ss.str();
    BigQuerySink::Settings s;
    s.project = "p";
    s.dataset = "d";
    s.location = "US";
    s.credentials = dir + "/key.json";
    s.endpoint = "http://127.0.0.1:1";
    BigQuerySink sink(s);
    sink.open(Sink::Resume{});
    std::vector<double> times;
    size_t bytes = 0, requests = 0;
    for (int round = 0; round < rounds; round++) {
        double t0 = cpu_ms();
        auto ex = sink.exchange(lines, "k");
        bytes = requests = 0;
        HttpRequest r = ex->next();
        for (;;) {
            HttpResponse a;
            a.status = 200;
            if (r.url.find("/token") != std::string::npos) {
                a.body = "{\"access_token\":\"x\",\"expires_in\":3600}";
            } else if (r.url.find("/insertAll") != std::string::npos) {
                a.body = "{}";
                bytes += r.body.size();
                requests++;
            } else {
                a.body = "{\"location\":\"US\"}";
            }
            if (ex->answer(a))
                break;
            r = ex->next();
        }
        if (round > 0) /* the first makes the tables */
            times.push_back(cpu_ms() - t0);
    }
    std::sort(times.begin(), times.end());
    double min = times.front(), median = times[times.size() / 2];
    printf("%.0f rows, %zu insertAll (%zu bytes): CPU min %.1f ms (%.0f rows/s), median %.1f ms "
           "(%.0f rows/s)\n",
           rows, requests, bytes, min, rows / (min / 1e3), median, rows / (median / 1e3));
    return 0;
}
