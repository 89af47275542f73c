/* raw_json.cpp: see raw_json.h. */
#include "changelog/json_writer.h"
#include "changelog/raw_json.h"

namespace pgsink::raw_json
{

size_t value_end(std::string_view s, size_t i)
{
    i = skip_space(s, i);
    if (i >= s.size())
        throw std::runtime_error("a JSON value is missing");
    if (s[i] == '"')
        return string_end(s, i);
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        for (; i < s.size(); i++) {
            char c = s[i];
            if (c == '"') {
                i = string_end(s, i) - 1;
            } else if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return i + 1;
            }
        }
        throw std::runtime_error("a JSON object or array has no end");
    }
    size_t start = i;
    while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' &&
           s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
        i++;
    if (i == start)
        throw std::runtime_error("a JSON value is missing");
    return i;
}

void append_string(std::string &out, std::string_view s)
{
    json::append_string(out, s); /* the changelog's own writer: same escapes, 8 bytes at a time */
}

} // namespace pgsink::raw_json
