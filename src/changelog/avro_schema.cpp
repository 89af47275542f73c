/*
 * avro_schema.cpp: Avro schema JSON for a relation, validated with avro-c.
 */
#include <stdexcept>
#include <unordered_set>

#include <avro.h>

#include "changelog/avro_schema.h"
#include "changelog/json_writer.h"

namespace pgsink
{

std::string avro_name(const std::string &identifier)
{
    std::string name;
    name.reserve(identifier.size() + 1);
    for (unsigned char c : identifier) {
        bool ok =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        name.push_back(ok ? static_cast<char>(c) : '_');
    }
    if (name.empty() || (name[0] >= '0' && name[0] <= '9'))
        name.insert(name.begin(), '_');
    return name;
}

std::string build_avro_schema(const RelationSchema &rel)
{
    std::string out;
    out.append("{\"namespace\":");
    json::append_string(out, avro_name(rel.nspname) + "." + avro_name(rel.relname));
    out.append(",\"type\":\"record\",\"name\":\"value\",\"fields\":[");

    std::unordered_set<std::string> used;
    bool first = true;
    for (const ColumnSchema &col : rel.columns) {
        std::string name = avro_name(col.name);
        /* Sanitising can make two names equal: keep them distinct. */
        for (int n = 2; used.count(name); n++)
            name = avro_name(col.name) + "_" + std::to_string(n);
        used.insert(name);

        if (!first)
            out.push_back(',');
        first = false;
        out.append("{\"name\":");
        json::append_string(out, name);
        out.append(",\"type\":[");
        out.append(col.avro_type);
        out.append(",\"null\"],\"default\":null,\"pg_type\":");
        json::append_string(out, col.pg_type);
        if (name != col.name) {
            out.append(",\"pg_name\":");
            json::append_string(out, col.name);
        }
        out.push_back('}');
    }
    out.append("],\"key\":[");
    for (size_t i = 0; i < rel.key.size(); i++) {
        if (i)
            out.push_back(',');
        json::append_string(out, rel.key[i]);
    }
    out.append("]}");

    avro_schema_t schema = nullptr;
    if (avro_schema_from_json_length(out.data(), out.size(), &schema) != 0)
        throw std::runtime_error(std::string("invalid Avro schema for ") + rel.nspname + "." +
                                 rel.relname + ": " + avro_strerror());
    avro_schema_decref(schema);
    return out;
}

} // namespace pgsink
