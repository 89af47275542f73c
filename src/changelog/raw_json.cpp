/* raw_json.cpp: see raw_json.h. */
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
    static const char kHex[] = "0123456789abcdef";
    out.push_back('"');
    size_t run = 0; /* start of the bytes not yet copied */
    for (size_t i = 0; i < s.size(); i++) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        out.append(s.data() + run, i - run);
        run = i + 1;
        out.push_back('\\');
        switch (c) {
        case '"':
        case '\\':
            out.push_back(static_cast<char>(c));
            break;
        case '\b':
            out.push_back('b');
            break;
        case '\f':
            out.push_back('f');
            break;
        case '\n':
            out.push_back('n');
            break;
        case '\r':
            out.push_back('r');
            break;
        case '\t':
            out.push_back('t');
            break;
        default:
            out += "u00";
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 15]);
        }
    }
    out.append(s.data() + run, s.size() - run);
    out.push_back('"');
}

} // namespace pgsink::raw_json
