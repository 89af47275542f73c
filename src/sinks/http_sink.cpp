/*
 * http_sink.cpp: the one-request exchange most HTTP sinks need (see
 * sinks/sink.h): the batch becomes request(), and answer() says what its
 * answer means.
 */
#include <stdexcept>

#include "sinks/sink.h"

namespace pgsink
{

namespace
{
class OneRequest final : public HttpSink::Exchange
{
  public:
    OneRequest(HttpSink &sink, std::string_view lines, const std::string &key)
        : sink_(sink), lines_(lines), key_(key)
    {
    }
    HttpRequest next() override { return sink_.request(lines_, key_); }
    std::optional<Answer> answer(const HttpResponse &response) override
    {
        return sink_.answer(response, lines_);
    }

  private:
    HttpSink &sink_;
    std::string_view lines_;
    std::string key_;
};
} // namespace

std::unique_ptr<HttpSink::Exchange> HttpSink::exchange(std::string_view lines,
                                                       const std::string &key)
{
    return std::make_unique<OneRequest>(*this, lines, key);
}

HttpRequest HttpSink::request(std::string_view, const std::string &)
{
    throw std::logic_error("pgsink: an HTTP sink without request() must make its own exchange()");
}

Answer HttpSink::answer(const HttpResponse &, std::string_view)
{
    throw std::logic_error("pgsink: an HTTP sink without answer() must make its own exchange()");
}

} // namespace pgsink
