/*
 * elasticsearch_names.cpp: index names, document ids and field mappings of
 * the Elasticsearch sink (see elasticsearch_sink.h).
 */
#include <nlohmann/json.hpp>

#include "core/digest.h"
#include "sinks/elasticsearch_sink.h"

namespace pgsink
{

std::string elasticsearch_prefix_problem(const std::string &prefix)
{
    if (prefix.size() > 100)
        return "pgsink.elasticsearch_index_prefix is longer than 100 bytes";
    for (unsigned char c : prefix)
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
            return "pgsink.elasticsearch_index_prefix may only hold lower case letters, digits, "
                   "'_', '-' and '.' (Elasticsearch refuses other characters in index names)";
    if (!prefix.empty() && (prefix[0] == '_' || prefix[0] == '-' || prefix[0] == '.'))
        return "pgsink.elasticsearch_index_prefix may not start with '_', '-' or '.' "
               "(Elasticsearch refuses or hides such index names)";
    return "";
}

std::string elasticsearch_index_name(const std::string &prefix, const std::string &schema,
                                     const std::string &table)
{
    std::string original = schema + "." + table;
    std::string lower;
    bool changed = false;
    for (char c : original) {
        char l = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
        /* Schema entries' names are Avro names ([A-Za-z0-9_]); anything else is replaced. */
        if (!((l >= 'a' && l <= 'z') || (l >= '0' && l <= '9') || l == '_' || l == '.'))
            l = '_';
        changed = changed || l != c;
        lower.push_back(l);
    }
    std::string name = prefix + lower;
    if (name.size() > 200) {
        name = name.substr(0, 180);
        changed = true;
    }
    if (changed)
        name += "-" + sha256_hex(original, 4);
    if (name[0] == '_' || name[0] == '-' || name[0] == '+')
        name = "pgsink-" + name;
    return name;
}

std::string elasticsearch_doc_id(const std::vector<std::string> &key_texts)
{
    std::string id;
    if (key_texts.size() == 1) {
        id = key_texts[0];
    } else {
        nlohmann::json a = nlohmann::json::array();
        for (const std::string &t : key_texts)
            a.push_back(t);
        id = a.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
    if (id.empty() || id.size() > 512 || id[0] == '#')
        return "#" + sha256_hex(id);
    return id;
}

std::string elasticsearch_field_mapping(const std::string &pg_type, bool json_stored)
{
    std::string t = pg_type;
    /* An array holds values of its element's type: Elasticsearch fields take arrays. */
    while (t.size() > 2 && t.compare(t.size() - 2, 2, "[]") == 0)
        t.resize(t.size() - 2);
    size_t paren = t.find('(');
    std::string base = paren == std::string::npos ? t : t.substr(0, paren);
    while (!base.empty() && base.back() == ' ')
        base.pop_back();
    /* What follows a typmod: "timestamp(3) with time zone". */
    if (paren != std::string::npos) {
        size_t close = t.find(')', paren);
        if (close != std::string::npos && close + 1 < t.size())
            base += t.substr(close + 1);
    }
    if (base == "smallint")
        return R"({"type":"short"})";
    if (base == "integer")
        return R"({"type":"integer"})";
    if (base == "bigint")
        return R"({"type":"long"})";
    /* NaN and the infinities are no numbers to Elasticsearch: kept in _source, not indexed. */
    if (base == "real")
        return R"({"type":"float","ignore_malformed":true})";
    if (base == "double precision")
        return R"({"type":"double","ignore_malformed":true})";
    /* Exact digits (the keyword), and a double for ranges and sorting. */
    if (base == "numeric")
        return R"({"type":"keyword","fields":{"number":{"type":"double","ignore_malformed":true}}})";
    if (base == "boolean")
        return R"({"type":"boolean"})";
    /* Microseconds kept (the nanosecond format reads them); infinity and BC kept in _source. */
    if (base == "date" || base == "timestamp without time zone" ||
        base == "timestamp with time zone")
        return R"({"type":"date","format":"strict_date_optional_time_nanos","ignore_malformed":true})";
    if (base == "json" || base == "jsonb")
        return json_stored ? R"({"type":"object","enabled":false})" : R"({"type":"flattened"})";
    if (base == "bytea")
        return R"({"type":"binary"})";
    if (base == "text" || base == "character varying" || base == "character" || base == "name" ||
        base == "citext")
        return R"({"type":"text","fields":{"keyword":{"type":"keyword","ignore_above":256}}})";
    /* uuid, inet, intervals, times, ranges, enums, user types: their text, exact. */
    return R"({"type":"keyword","ignore_above":8191})";
}

} // namespace pgsink
