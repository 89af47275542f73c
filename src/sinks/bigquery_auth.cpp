/*
 * bigquery_auth.cpp: see bigquery_auth.h.
 */
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sstream>
#include <stdexcept>
#include <sys/stat.h>

#include "sinks/bigquery_auth.h"

namespace pgsink
{

using json = nlohmann::json;

static const char kScope[] = "https://www.googleapis.com/auth/bigquery";

std::string base64url(const std::string &data)
{
    static const char k[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    out.reserve((data.size() + 2) / 3 * 4);
    size_t i = 0;
    const unsigned char *d = reinterpret_cast<const unsigned char *>(data.data());
    for (; i + 2 < data.size(); i += 3) {
        uint32_t v = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
        out.push_back(k[(v >> 18) & 63]);
        out.push_back(k[(v >> 12) & 63]);
        out.push_back(k[(v >> 6) & 63]);
        out.push_back(k[v & 63]);
    }
    if (i + 1 == data.size()) {
        uint32_t v = d[i] << 16;
        out.push_back(k[(v >> 18) & 63]);
        out.push_back(k[(v >> 12) & 63]);
    } else if (i + 2 == data.size()) {
        uint32_t v = (d[i] << 16) | (d[i + 1] << 8);
        out.push_back(k[(v >> 18) & 63]);
        out.push_back(k[(v >> 12) & 63]);
        out.push_back(k[(v >> 6) & 63]);
    }
    return out;
}

std::string credential_free_excerpt(const std::string &text, size_t max)
{
    auto token_char = [](char ch) {
        return isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.' ||
               ch == '/' || ch == '+' || ch == '=';
    };
    std::string out;
    for (size_t i = 0; i < text.size();) {
        size_t j = i;
        while (j < text.size() && token_char(text[j]))
            j++;
        if (j - i >= 48)
            out += "[...]";
        else
            out.append(text, i, j - i);
        if (j < text.size())
            out.push_back(text[j]);
        i = j + 1;
    }
    return answer_excerpt(out, max);
}

BigQueryAuth::~BigQueryAuth()
{
    if (key_ != nullptr)
        EVP_PKEY_free(static_cast<EVP_PKEY *>(key_));
}

void BigQueryAuth::load(const std::string &path)
{
    /*
     * Messages never name the file: they reach pgsink.sinks, which
     * pg_monitor reads, and the setting is superuser-only.
     */
    const std::string what = "the key file (pgsink.bigquery_credentials)";
    if (path.empty())
        throw std::runtime_error("pgsink.bigquery_credentials is not set: give the path of the "
                                 "service account's JSON key file");
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw std::runtime_error("could not open " + what + ": " + strerror(errno));
    std::stringstream text;
    text << in.rdbuf();
    json k = json::parse(text.str(), nullptr, false);
    if (!k.is_object())
        throw std::runtime_error(what + " is not a JSON object: give a service account's key "
                                        "file (JSON) as the Google Cloud console makes it");
    auto field = [&](const char *name, bool required) -> std::string {
        if (!k.contains(name) || !k[name].is_string()) {
            if (required)
                throw std::runtime_error(what + " has no \"" + name +
                                         "\": is it a service account's key file?");
            return {};
        }
        return k[name].get<std::string>();
    };
    std::string type = field("type", false);
    if (!type.empty() && type != "service_account")
        throw std::runtime_error(what + " is not a service account's key (its \"type\" is not "
                                        "\"service_account\")");
    std::string pem = field("private_key", true);
    client_email_ = field("client_email", true);
    key_id_ = field("private_key_id", false);
    token_uri_ = field("token_uri", false);
    project_id_ = field("project_id", false);
    if (token_uri_.empty())
        token_uri_ = "https://oauth2.googleapis.com/token";
    if (token_uri_.rfind("https://", 0) != 0 && token_uri_.rfind("http://", 0) != 0)
        throw std::runtime_error(what + ": token_uri is not an http(s) URL");
    BIO *bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    if (bio == nullptr)
        throw std::bad_alloc();
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    OPENSSL_cleanse(pem.data(), pem.size());
    if (key == nullptr)
        throw std::runtime_error(what + ": its private_key is not a PEM private key");
    if (EVP_PKEY_base_id(key) != EVP_PKEY_RSA) {
        EVP_PKEY_free(key);
        throw std::runtime_error(what + ": its private_key is not an RSA key (RS256 needs one)");
    }
    if (key_ != nullptr)
        EVP_PKEY_free(static_cast<EVP_PKEY *>(key_));
    key_ = key;
    token_.clear();
    expires_unix_ = refresh_unix_ = 0;
    generation_++;
}

bool BigQueryAuth::valid(int64_t now_unix) const
{
    return !token_.empty() && now_unix < refresh_unix_;
}

void BigQueryAuth::invalidate(uint64_t generation)
{
    if (generation != generation_)
        return; /* a newer token was taken meanwhile */
    token_.clear();
    refresh_unix_ = 0;
}

std::string BigQueryAuth::assertion(int64_t now_unix) const
{
    if (key_ == nullptr)
        throw std::runtime_error("the BigQuery key file is not loaded");
    json header = {{"alg", "RS256"}, {"typ", "JWT"}};
    if (!key_id_.empty())
        header["kid"] = key_id_;
    json claims = {{"iss", client_email_},
                   {"scope", kScope},
                   {"aud", token_uri_},
                   {"iat", now_unix},
                   {"exp", now_unix + 3600}};
    std::string input = base64url(header.dump()) + "." + base64url(claims.dump());
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == nullptr)
        throw std::bad_alloc();
    size_t len = 0;
    std::string sig;
    bool ok = EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr,
                                 static_cast<EVP_PKEY *>(key_)) == 1 &&
              EVP_DigestSignUpdate(ctx, input.data(), input.size()) == 1 &&
              EVP_DigestSignFinal(ctx, nullptr, &len) == 1;
    if (ok) {
        sig.resize(len);
        ok = EVP_DigestSignFinal(ctx, reinterpret_cast<unsigned char *>(&sig[0]), &len) == 1;
        sig.resize(len);
    }
    EVP_MD_CTX_free(ctx);
    if (!ok)
        throw std::runtime_error("could not sign the token request (OpenSSL RS256)");
    return input + "." + base64url(sig);
}

HttpRequest BigQueryAuth::token_request(int64_t now_unix) const
{
    HttpRequest r;
    r.url = token_uri_;
    r.headers = {"Content-Type: application/x-www-form-urlencoded"};
    /* The JWT's characters (base64url and '.') need no form escaping. */
    r.body = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=" +
             assertion(now_unix);
    r.keep_answer = 64 * 1024;
    return r;
}

std::string BigQueryAuth::take_token(const HttpResponse &r, int64_t now_unix)
{
    json j = json::parse(r.body, nullptr, false);
    if (r.status != 200 || !j.is_object() || !j.contains("access_token") ||
        !j["access_token"].is_string()) {
        std::string why = r.status == 0 ? r.transport_error : "HTTP " + std::to_string(r.status);
        if (j.is_object() && j.contains("error") && j["error"].is_string()) {
            why += " " + credential_free_excerpt(j["error"].get<std::string>(), 80);
            if (j.contains("error_description") && j["error_description"].is_string())
                why +=
                    ": " + credential_free_excerpt(j["error_description"].get<std::string>(), 200);
        } else if (r.status == 200) {
            why += ", without an access_token";
        }
        return "the token endpoint " + url_for_messages(token_uri_) + " refused the key of " +
               client_email_ + " (" + why + ")";
    }
    std::string token = j["access_token"].get<std::string>();
    if (token.empty() || token.find_first_of("\r\n") != std::string::npos)
        return "the token endpoint " + url_for_messages(token_uri_) +
               " answered an access token that cannot be sent in a header";
    int64_t lifetime = 3600;
    if (j.contains("expires_in") && j["expires_in"].is_number())
        lifetime = j["expires_in"].get<int64_t>();
    token_ = std::move(token);
    expires_unix_ = now_unix + lifetime;
    /* Refreshed early (Google's libraries: 3 min 45 s), or halfway through a short lifetime. */
    refresh_unix_ = expires_unix_ - std::min<int64_t>(225, lifetime / 2);
    generation_++;
    return {};
}

} // namespace pgsink
