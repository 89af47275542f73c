#!/usr/bin/env python3
"""A strict Elasticsearch fake for pgsink's tests (Python standard library only).

    elasticsearch_fake.py PORT STATE [--api-key KEY] [--user USER --password PASSWORD]
                          [--max-content-length BYTES]

It speaks the part of Elasticsearch 8's REST API the elasticsearch sink uses, and
refuses what Elasticsearch refuses there:
  GET /                              the cluster's banner
  PUT /<index>                       create: index name rules (lower case, no \\ / * ? " < > | , #
                                     : or space, not starting with - _ +, at most 255 bytes),
                                     settings (index.gc_deletes), mappings (known types and
                                     parameters only; dynamic true/false/strict; _meta), aliases
                                     (with a filter); 400 resource_already_exists_exception
  GET /<index>/_mapping              {index: {mappings}}; 404 index_not_found_exception
  PUT|POST /<index>/_mapping         new fields added, a field's type never changed (400), _meta
                                     replaced
  POST /<index>/_refresh             what was written becomes visible to searches
  POST /[<index>/]_mget              realtime gets: {"ids": [...]} or {"docs": [...]}, a
                                     doc's "_source": [fields] or false
  any request's ?filter_path=a.*.b,c keeps only those members of the answer
  POST /[<index>/]_bulk              NDJSON: an action line (exactly one of index, create,
                                     update, delete; known parameters only), then a source line
                                     for all but delete; the body must end with a newline;
                                     Content-Type application/x-ndjson or application/json;
                                     _id at most 512 bytes; version_type internal (refused with a
                                     version), external, external_gt, external_gte; per-item
                                     results in order with "errors"; versions compared for real
                                     (409 version_conflict_engine_exception); a delete's version
                                     is remembered for index.gc_deletes (60s unless set) on the
                                     fake's clock; documents checked against the mapping (strict
                                     dynamic mapping, types, formats; ignore_malformed); no
                                     index auto-created (action.auto_create_index: false): 404
                                     index_not_found_exception per item
  DELETE /<index>                    the index, its documents and aliases are gone
  POST /<index>/_delete_by_query     bool / range / term / match_all queries over what the last
                                     refresh made visible; deletes with internal versions
Auth: with --api-key, "Authorization: ApiKey KEY"; with --user, HTTP basic; else none.
A body larger than --max-content-length (default 100 MB) gets 413.

Control endpoints (no auth), for the test:
  POST /_fake/clock {"advance": S}   move the fake's clock (gc_deletes) S seconds on
  POST /_fake/faults {...}           replace the faults:
      "status": N, "count": C, "path": "_bulk", "retry_after": "1"
                                     answer N (429 es_rejected_execution_exception, 503, ...)
                                     to the next C requests whose path holds path
      "item_429": C                  refuse the next C index/delete items with 429
      "delay": S                     wait S seconds before answering any request
      "drop_after_apply": C          apply the next C bulks, then close without answering
      "garbage": C                   answer the next C bulks 200 with an HTML page, unapplied
  GET /_fake/dump/<index>[?all=1]    {"docs": {_id: _source}} of live documents (all=1:
                                     tombstones too, and {"versions": {_id: version}};
                                     md5=f,g: string fields f and g as the MD5 of their text)
  POST /_fake/stats?reset_max_concurrent=1  start max_concurrent again from now
  GET /_fake/stats                   counters ("max_concurrent": most requests served at
                                     once; "revived": live documents written over a
                                     tombstone or a remembered delete)
  POST /_fake/save                   write STATE now (it is also written at SIGTERM and read
                                     at start: a restart keeps the indexes)
"""
import base64
import gzip
import hashlib
import http.server
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.parse

args = sys.argv[1:]
port, state_path = int(args[0]), args[1]
opts = {}
i = 2
while i < len(args):
    opts[args[i]] = args[i + 1]
    i += 2
api_key = opts.get("--api-key")
user, password = opts.get("--user"), opts.get("--password")
max_content = int(opts.get("--max-content-length", str(100 * 1024 * 1024)))

lock = threading.RLock()
state = {"indices": {}, "clock": 0.0, "seq": 0}
faults = {}
stats = {"requests": 0, "bulk": 0, "items": 0, "conflicts": 0, "created": 0, "updated": 0,
         "deleted": 0, "item_errors": 0, "item_429": 0, "auth_failures": 0, "mget": 0,
         "delete_by_query": 0, "refresh": 0, "max_body": 0, "status_faults": 0, "dropped": 0,
         "bulk_items_max": 0, "revived": 0, "too_large": 0, "garbage": 0,
         "max_concurrent": 0}
concurrent = 0  # requests being served (the delay included)

if os.path.exists(state_path):
    with open(state_path, encoding="utf-8") as f:
        state = json.load(f)


def save_state():
    with lock:
        tmp = state_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f)
        os.replace(tmp, state_path)


def now():
    return time.time() + state["clock"]


class Refusal(Exception):
    def __init__(self, status, etype, reason):
        super().__init__(reason)
        self.status, self.etype, self.reason = status, etype, reason

    def body(self):
        return {"error": {"root_cause": [{"type": self.etype, "reason": self.reason}],
                          "type": self.etype, "reason": self.reason}, "status": self.status}


FORBIDDEN = set('\\/*?"<>|,#: ')
TYPES = {
    "short": {"coerce", "ignore_malformed", "index", "doc_values", "store", "null_value", "fields"},
    "integer": {"coerce", "ignore_malformed", "index", "doc_values", "store", "null_value", "fields"},
    "long": {"coerce", "ignore_malformed", "index", "doc_values", "store", "null_value", "fields"},
    "float": {"coerce", "ignore_malformed", "index", "doc_values", "store", "null_value", "fields"},
    "double": {"coerce", "ignore_malformed", "index", "doc_values", "store", "null_value", "fields"},
    "keyword": {"ignore_above", "index", "doc_values", "store", "null_value", "normalizer", "fields"},
    "text": {"analyzer", "index", "store", "fields", "search_analyzer", "norms"},
    "boolean": {"index", "doc_values", "store", "null_value", "fields"},
    "date": {"format", "ignore_malformed", "index", "doc_values", "store", "null_value", "fields",
             "locale"},
    "date_nanos": {"format", "ignore_malformed", "index", "doc_values", "store", "null_value"},
    "flattened": {"depth_limit", "ignore_above", "index", "doc_values", "null_value"},
    "binary": {"doc_values", "store"},
    "object": {"enabled", "dynamic", "properties"},
}
DATE_FORMATS = {"strict_date_optional_time", "strict_date_optional_time_nanos", "date_optional_time",
                "epoch_millis", "strict_date", "date"}
METADATA = {"_id", "_index", "_source", "_routing", "_ignored", "_seq_no", "_version",
            "_primary_term", "_tier", "_field_names", "_doc_count", "_meta", "_nested_path",
            "_data_stream_timestamp", "_tsid", "_type", "_size", "_version_type"}
INT_RANGE = {"short": (-2**15, 2**15 - 1), "integer": (-2**31, 2**31 - 1),
             "long": (-2**63, 2**63 - 1)}
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}(:\d{2}(:\d{2}([.,]\d{1,9})?)?)?"
                     r"(Z|[+-]\d{2}(:?\d{2})?)?)?$")
NUM_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def check_index_name(name):
    if name != name.lower():
        raise Refusal(400, "invalid_index_name_exception",
                      "Invalid index name [%s], must be lowercase" % name)
    if any(c in FORBIDDEN for c in name):
        raise Refusal(400, "invalid_index_name_exception",
                      "Invalid index name [%s], must not contain the following characters %s"
                      % (name, sorted(FORBIDDEN)))
    if name[:1] in ("-", "_", "+") or name in (".", ".."):
        raise Refusal(400, "invalid_index_name_exception",
                      "Invalid index name [%s], must not start with '_', '-', or '+'" % name)
    if len(name.encode("utf-8")) > 255:
        raise Refusal(400, "invalid_index_name_exception",
                      "Invalid index name [%s], index name is too long" % name)


def check_mapping(props, where=""):
    for field, m in props.items():
        path = where + field
        if not isinstance(m, dict):
            raise Refusal(400, "mapper_parsing_exception", "Expected map for property [%s]" % path)
        t = m.get("type", "object" if "properties" in m else None)
        if t not in TYPES:
            raise Refusal(400, "mapper_parsing_exception",
                          "No handler for type [%s] declared on field [%s]" % (t, path))
        for p in m:
            if p != "type" and p not in TYPES[t]:
                raise Refusal(400, "mapper_parsing_exception",
                              "unknown parameter [%s] on mapper [%s] of type [%s]" % (p, path, t))
        if "format" in m:
            for fmt in m["format"].split("||"):
                if fmt not in DATE_FORMATS:
                    raise Refusal(400, "mapper_parsing_exception",
                                  "Invalid format: [%s]: Unknown pattern" % fmt)
        if "fields" in m:
            check_mapping(m["fields"], path + ".")
        if "properties" in m:
            check_mapping(m["properties"], path + ".")


def resolve(name):
    """The index a name or an alias names, or None."""
    ix = state["indices"]
    if name in ix:
        return name
    for n, index in ix.items():
        if name in index["aliases"]:
            return n
    return None


def index_of(name):
    n = resolve(name)
    if n is None:
        raise Refusal(404, "index_not_found_exception", "no such index [%s]" % name)
    return n, state["indices"][n]


def create_index(name, body):
    check_index_name(name)
    if resolve(name) is not None:
        raise Refusal(400, "resource_already_exists_exception",
                      "index [%s/abc123] already exists" % name)
    for k in body:
        if k not in ("settings", "mappings", "aliases"):
            raise Refusal(400, "parse_exception", "unknown key [%s] for create index" % k)
    mappings = body.get("mappings", {})
    for k in mappings:
        if k not in ("dynamic", "properties", "_meta", "_source"):
            raise Refusal(400, "mapper_parsing_exception",
                          "Root mapping definition has unsupported parameters: [%s]" % k)
    if mappings.get("dynamic", True) not in (True, False, "true", "false", "strict", "runtime"):
        raise Refusal(400, "mapper_parsing_exception", "Could not convert [dynamic]")
    check_mapping(mappings.get("properties", {}))
    settings = body.get("settings", {})
    gc = settings.get("index", {}).get("gc_deletes", settings.get("index.gc_deletes", "60s"))
    aliases = body.get("aliases", {})
    for a, spec in aliases.items():
        check_index_name(a)
        if resolve(a) is not None:
            raise Refusal(400, "invalid_alias_name_exception",
                          "Invalid alias name [%s]: an index or data stream exists with the same "
                          "name as the alias" % a)
        for k in spec:
            if k not in ("filter", "routing", "is_write_index", "is_hidden"):
                raise Refusal(400, "illegal_argument_exception", "unknown alias key [%s]" % k)
    m = re.match(r"^(\d+)(ms|s|m)$", str(gc))
    if not m:
        raise Refusal(400, "illegal_argument_exception", "failed to parse [index.gc_deletes]")
    gc_s = int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]
    state["indices"][name] = {"mappings": {"dynamic": mappings.get("dynamic", True),
                                           "_meta": mappings.get("_meta"),
                                           "properties": mappings.get("properties", {})},
                              "gc_deletes": gc_s, "aliases": aliases, "docs": {},
                              "deleted": {}, "refreshed": state["seq"]}
    return {"acknowledged": True, "shards_acknowledged": True, "index": name}


def put_mapping(name, body):
    n, index = index_of(name)
    props = body.get("properties", {})
    check_mapping(props)
    have = index["mappings"]["properties"]
    for f, m in props.items():
        if f in have and have[f].get("type") != m.get("type"):
            raise Refusal(400, "illegal_argument_exception",
                          "mapper [%s] cannot be changed from type [%s] to [%s]"
                          % (f, have[f].get("type"), m.get("type")))
    for f, m in props.items():
        have.setdefault(f, m)
    if "_meta" in body:
        index["mappings"]["_meta"] = body["_meta"]
    return {"acknowledged": True}


def mapping_view(index):
    m = {"dynamic": index["mappings"]["dynamic"], "properties": index["mappings"]["properties"]}
    if index["mappings"].get("_meta") is not None:
        m["_meta"] = index["mappings"]["_meta"]
    if m["dynamic"] is True:
        del m["dynamic"]
    return m


def check_value(path, m, value, doc_id):
    """A field's value against its mapping: raises Refusal if Elasticsearch would."""
    if value is None:
        return
    t = m.get("type", "object")
    if t == "object" and m.get("enabled") is False:
        return  # stored, never parsed: any JSON value
    if isinstance(value, list) and t != "flattened":
        for v in value:
            check_value(path, m, v, doc_id)
        return

    def bad(why=""):
        if m.get("ignore_malformed"):
            return
        preview = json.dumps(value)[:20]
        raise Refusal(400, "document_parsing_exception",
                      "[1:1] failed to parse field [%s] of type [%s] in document with id '%s'. "
                      "Preview of field's value: '%s'%s" % (path, t, doc_id, preview, why))
    if t in INT_RANGE:
        if isinstance(value, bool) or isinstance(value, (dict, list)):
            return bad()
        if isinstance(value, str):
            if not NUM_RE.match(value.strip()):
                return bad()
            try:
                value = int(float(value)) if not re.match(r"^[+-]?\d+$", value) else int(value)
            except (ValueError, OverflowError):
                return bad()
        if isinstance(value, float):
            value = int(value)
        lo, hi = INT_RANGE[t]
        if not lo <= value <= hi:
            return bad(" (out of range)")
    elif t in ("float", "double"):
        if isinstance(value, bool) or isinstance(value, (dict, list)):
            return bad()
        if isinstance(value, str) and not NUM_RE.match(value.strip()):
            return bad()
    elif t in ("keyword", "text"):
        if isinstance(value, dict):
            return bad()
    elif t == "boolean":
        if value not in (True, False, "true", "false", ""):
            return bad()
    elif t in ("date", "date_nanos"):
        fmts = m.get("format", "strict_date_optional_time||epoch_millis").split("||")
        ok = False
        for fmt in fmts:
            if fmt == "epoch_millis" and (isinstance(value, int) and not isinstance(value, bool)
                                          or isinstance(value, str) and value.isdigit()):
                ok = True
            elif fmt != "epoch_millis" and isinstance(value, str) and DATE_RE.match(value):
                ok = True
        if not ok:
            return bad()
    elif t == "flattened":
        if not isinstance(value, dict):
            return bad(" (a flattened field takes an object)")
    elif t == "binary":
        if not isinstance(value, str):
            return bad()
        try:
            base64.b64decode(value, validate=True)
        except ValueError:
            return bad()
    if "fields" in m:
        for sub, sm in m["fields"].items():
            check_value(path + "." + sub, sm, value, doc_id)


def check_source(index, doc_id, source):
    if not isinstance(source, dict):
        raise Refusal(400, "document_parsing_exception", "[1:1] document must be an object")
    props = index["mappings"]["properties"]
    strict = index["mappings"]["dynamic"] == "strict"
    for f, v in source.items():
        if f in METADATA:
            raise Refusal(400, "document_parsing_exception",
                          "[1:2] Field [%s] is a metadata field and cannot be added inside a "
                          "document. Use the index API request parameters." % f)
        if f not in props:
            if strict:
                raise Refusal(400, "strict_dynamic_mapping_exception",
                              "[1:2] mapping set to strict, dynamic introduction of [%s] within "
                              "[_doc] is not allowed" % f)
            continue
        check_value(f, props[f], v, doc_id)


def current_version(index, doc_id):
    d = index["docs"].get(doc_id)
    if d is not None:
        return d["version"]
    gone = index["deleted"].get(doc_id)
    if gone is not None and now() - gone[1] < index["gc_deletes"]:
        return gone[0]
    return None


def next_seq():
    state["seq"] += 1
    return state["seq"]


ACTION_PARAMS = {"_index", "_id", "version", "version_type", "routing", "if_seq_no",
                 "if_primary_term", "require_alias", "pipeline", "dynamic_templates",
                 "retry_on_conflict", "_source", "require_data_stream", "op_type"}


def parse_bulk(body, default_index):
    if not body.endswith(b"\n"):
        raise Refusal(400, "illegal_argument_exception",
                      "The bulk request must be terminated by a newline [\\n]")
    lines = body.split(b"\n")[:-1]
    ops, i, errors = [], 0, []
    while i < len(lines):
        line = lines[i].rstrip(b"\r")
        try:
            action = json.loads(line)
        except ValueError:
            raise Refusal(400, "x_content_parse_exception",
                          "[1:1] Malformed action/metadata line [%d], expected START_OBJECT" % (i + 1))
        if not isinstance(action, dict) or len(action) != 1:
            raise Refusal(400, "illegal_argument_exception",
                          "Malformed action/metadata line [%d], expected a simple value for field "
                          "[_index] but found one action" % (i + 1))
        (kind, params), = action.items()
        if kind not in ("index", "create", "update", "delete"):
            raise Refusal(400, "illegal_argument_exception",
                          "Malformed action/metadata line [%d], expected field [create], [delete], "
                          "[index] or [update] but found [%s]" % (i + 1, kind))
        for p in params:
            if p not in ACTION_PARAMS:
                raise Refusal(400, "illegal_argument_exception",
                              "Action/metadata line [%d] contains an unknown parameter [%s]"
                              % (i + 1, p))
        source = None
        if kind != "delete":
            if i + 1 >= len(lines):
                raise Refusal(400, "illegal_argument_exception",
                              "Validation Failed: 1: source is missing;")
            try:
                source = json.loads(lines[i + 1].rstrip(b"\r"))
            except ValueError as e:
                raise Refusal(400, "x_content_parse_exception", "[1:1] malformed source: %s" % e)
            i += 1
        i += 1
        index = params.get("_index", default_index)
        doc_id = params.get("_id")
        vt = params.get("version_type", "internal")
        if index is None:
            errors.append("index is missing")
        if doc_id is not None and len(str(doc_id).encode("utf-8")) > 512:
            errors.append("id [%s] is too long, must be no longer than 512 bytes but was: %d"
                          % (str(doc_id)[:20], len(str(doc_id).encode("utf-8"))))
        if doc_id == "":
            errors.append("if _id is specified it must not be empty")
        if vt not in ("internal", "external", "external_gt", "external_gte", "force"):
            raise Refusal(400, "illegal_argument_exception", "No version type match [%s]" % vt)
        if kind == "update" and "version" in params:
            errors.append("can't provide version in update")
        if "version" in params and vt == "internal":
            errors.append("internal versioning can not be used for optimistic concurrency "
                          "control. Please use `if_seq_no` and `if_primary_term` instead")
        if vt != "internal" and not isinstance(params.get("version"), int):
            errors.append("illegal version value [%s] for version type [%s]"
                          % (params.get("version"), vt))
        elif vt != "internal" and params["version"] < 0:
            errors.append("illegal version value [%d] for version type [%s]" % (params["version"], vt))
        if kind in ("delete", "update") and doc_id is None:
            errors.append("id is missing")
        ops.append((kind, index, doc_id, params, source))
    if errors:
        raise Refusal(400, "action_request_validation_exception",
                      "Validation Failed: " + " ".join("%d: %s;" % (k + 1, e)
                                                        for k, e in enumerate(errors)))
    return ops


def conflict(params, current):
    if current is None:
        return False
    vt = params.get("version_type", "internal")
    v = params.get("version")
    if vt == "external_gte":
        return v < current
    if vt in ("external", "external_gt"):
        return v <= current
    return False


def conflict_reason(doc_id, params, current):
    vt = params.get("version_type")
    how = "higher than" if vt == "external_gte" else "higher or equal to"
    return "[%s]: version conflict, current version [%d] is %s the one provided [%d]" % (
        doc_id, current, how, params.get("version"))


def apply_op(kind, index_name, doc_id, params, source):
    """One bulk item: its result object (with status)."""
    stats["items"] += 1
    res = {"_index": index_name, "_id": doc_id}
    try:
        if faults.get("item_429", 0) > 0:
            faults["item_429"] -= 1
            stats["item_429"] += 1
            raise Refusal(429, "es_rejected_execution_exception",
                          "rejected execution of coordinating operation [shard_detail=[%s][0]"
                          "[P], shard_coordinating_and_primary_bytes=0, "
                          "shard_operation_bytes=100, shard_max_coordinating_and_primary_bytes=0]"
                          % index_name)
        n, index = index_of(index_name)
        res["_index"] = n
        if kind == "update":
            raise Refusal(400, "illegal_argument_exception", "the fake does not do updates")
        if doc_id is None:
            doc_id = "auto%d" % next_seq()
            res["_id"] = doc_id
        current = current_version(index, doc_id)
        if kind == "create" and doc_id in index["docs"]:
            raise Refusal(409, "version_conflict_engine_exception",
                          "[%s]: version conflict, document already exists" % doc_id)
        if conflict(params, current):
            stats["conflicts"] += 1
            raise Refusal(409, "version_conflict_engine_exception",
                          conflict_reason(doc_id, params, current))
        vt = params.get("version_type", "internal")
        version = params["version"] if vt != "internal" else (current or 0) + 1
        if kind == "delete":
            existed = doc_id in index["docs"]
            index["docs"].pop(doc_id, None)
            index["deleted"][doc_id] = [version, now()]
            stats["deleted"] += 1
            res.update({"_version": version, "result": "deleted" if existed else "not_found",
                        "status": 200 if existed else 404})
        else:
            check_source(index, doc_id, source)
            existed = doc_id in index["docs"]
            was = index["docs"].get(doc_id)
            if (was is None and doc_id in index["deleted"] or was is not None and
                    was["source"].get("_pgsink_deleted") is True) and \
                    source.get("_pgsink_deleted") is not True:
                stats["revived"] += 1
            index["docs"][doc_id] = {"version": version, "source": source, "seq": next_seq()}
            index["deleted"].pop(doc_id, None)
            stats["updated" if existed else "created"] += 1
            res.update({"_version": version, "result": "updated" if existed else "created",
                        "status": 200 if existed else 201})
        res.update({"_shards": {"total": 1, "successful": 1, "failed": 0},
                    "_seq_no": state["seq"], "_primary_term": 1})
    except Refusal as r:
        if r.status != 409:
            stats["item_errors"] += 1
        res.update({"status": r.status, "error": {"type": r.etype, "reason": r.reason,
                                                  "index": index_name}})
    return {kind: res}


def matches(q, src):
    if not q or "match_all" in q:
        return True
    if "bool" in q:
        b = q["bool"]
        for must in b.get("filter", []) + b.get("must", []):
            if not matches(must, src):
                return False
        for no in b.get("must_not", []):
            if matches(no, src):
                return False
        should = b.get("should", [])
        if should:
            need = int(b.get("minimum_should_match", 1 if not (b.get("filter") or b.get("must"))
                             else 0))
            if sum(1 for s in should if matches(s, src)) < need:
                return False
        return True
    if "term" in q:
        (f, v), = q["term"].items()
        if isinstance(v, dict):
            v = v["value"]
        return src.get(f) == v
    if "range" in q:
        (f, r), = q["range"].items()
        x = src.get(f)
        if x is None:
            return False
        x = float(x)
        return all({"lt": x < float(b), "lte": x <= float(b), "gt": x > float(b),
                    "gte": x >= float(b)}[k] for k, b in r.items())
    raise Refusal(400, "parsing_exception", "unknown query [%s]" % next(iter(q)))


def delete_by_query(name, body, query):
    n, index = index_of(name)
    q = body.get("query", {})
    gone = []
    for doc_id, d in index["docs"].items():
        if d["seq"] <= index["refreshed"] and matches(q, d["source"]):
            gone.append(doc_id)
    for doc_id in gone:
        v = index["docs"].pop(doc_id)["version"] + 1
        index["deleted"][doc_id] = [v, now()]
    if query.get("refresh") == ["true"]:
        index["refreshed"] = state["seq"]
    stats["delete_by_query"] += 1
    return {"took": 1, "timed_out": False, "total": len(gone), "deleted": len(gone),
            "batches": 1, "version_conflicts": 0, "noops": 0, "failures": []}


def mget(name, body):
    out = []
    if "ids" in body:
        wanted = [(name, i, True) for i in body["ids"]]
    else:
        wanted = [(d.get("_index", name), d["_id"], d.get("_source", True))
                  for d in body.get("docs", [])]
    for index_name, doc_id, fields in wanted:
        try:
            n, index = index_of(index_name)
        except Refusal as r:
            out.append({"_index": index_name, "_id": doc_id, "error": r.body()["error"]})
            continue
        d = index["docs"].get(doc_id)
        if d is None:
            out.append({"_index": n, "_id": doc_id, "found": False})
        else:
            doc = {"_index": n, "_id": doc_id, "_version": d["version"], "_seq_no": d["seq"],
                   "_primary_term": 1, "found": True}
            if isinstance(fields, list):  # per document: only these fields of _source
                doc["_source"] = {f: v for f, v in d["source"].items() if f in fields}
            elif fields is not False:
                doc["_source"] = d["source"]
            out.append(doc)
    stats["mget"] += 1
    return {"docs": out}


def filter_path(obj, patterns):
    """Elasticsearch's filter_path: only the members the dotted patterns (with *) name;
    arrays are looked through."""
    if isinstance(obj, list):
        out = [filter_path(e, patterns) for e in obj]
        return [e for e in out if e not in (None, {}, [])]
    if not isinstance(obj, dict):
        return None
    out = {}
    for k, v in obj.items():
        rest = [p[1:] for p in patterns if p and (p[0] == "*" or p[0] == k)]
        if any(not r for r in rest):
            out[k] = v
        elif rest:
            fv = filter_path(v, rest)
            if fv not in (None, {}, []):
                out[k] = fv
    return out


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, obj, headers=()):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.serve("GET")

    def do_PUT(self):
        self.serve("PUT")

    def do_POST(self):
        self.serve("POST")

    def do_DELETE(self):
        self.serve("DELETE")

    def serve(self, method):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        url = urllib.parse.urlsplit(self.path)
        path, query = url.path, urllib.parse.parse_qs(url.query)
        parts = [urllib.parse.unquote(p) for p in path.split("/") if p]
        if parts[:1] == ["_fake"]:
            with lock:
                return self.control(method, parts, body, query)
        global concurrent
        with lock:
            concurrent += 1
            stats["max_concurrent"] = max(stats["max_concurrent"], concurrent)
        try:
            delay = faults.get("delay", 0)
            if delay:
                time.sleep(delay)
            return self.serve_now(method, parts, body, query)
        finally:
            with lock:
                concurrent -= 1

    def serve_now(self, method, parts, body, query):
        with lock:
            stats["requests"] += 1
            stats["max_body"] = max(stats["max_body"], len(body))
            try:
                result = self.route(method, parts, body, query)
            except Refusal as r:
                return self.send(r.status, r.body(), getattr(r, "headers", ()))
            if result is None:
                return None
            status, obj = result
        if "filter_path" in query:
            obj = filter_path(obj, [p.split(".") for p in query["filter_path"][0].split(",")])
        return self.send(status, obj)

    def control(self, method, parts, body, query):
        if parts[1] == "clock":
            state["clock"] += float(json.loads(body)["advance"])
            return self.send(200, {"clock": state["clock"]})
        if parts[1] == "faults":
            faults.clear()
            faults.update(json.loads(body) if body else {})
            return self.send(200, faults)
        if parts[1] == "stats":
            if method == "POST" and query.get("reset_max_concurrent"):
                stats["max_concurrent"] = concurrent  # from now on: what a phase sends
            return self.send(200, stats)
        if parts[1] == "save":
            save_state()
            return self.send(200, {"saved": True})
        if parts[1] == "dump":
            n = resolve(parts[2])
            if n is None:
                return self.send(404, {"error": "no such index"})
            index = state["indices"][n]
            every = query.get("all") == ["1"]
            docs = {k: d["source"] for k, d in index["docs"].items()
                    if every or d["source"].get("_pgsink_deleted") is not True}
            # md5=f1,f2: those string fields as the MD5 of their UTF-8 text (a lean dump)
            digest = query.get("md5", [""])[0].split(",")
            if digest != [""]:
                docs = {k: {f: (hashlib.md5(v.encode()).hexdigest()
                                if f in digest and isinstance(v, str) else v)
                            for f, v in src.items()} for k, src in docs.items()}
            out = {"docs": docs, "index": n, "mappings": mapping_view(index),
                   "aliases": index["aliases"]}
            if every:
                out["versions"] = {k: d["version"] for k, d in index["docs"].items()}
            return self.send(200, out)
        return self.send(404, {"error": "unknown control"})

    def route(self, method, parts, body, query):
        auth = self.headers.get("Authorization", "")
        want = None
        if api_key:
            want = "ApiKey " + api_key
        elif user:
            want = "Basic " + base64.b64encode((user + ":" + password).encode()).decode()
        if want is not None and auth != want:
            stats["auth_failures"] += 1
            r = Refusal(401, "security_exception",
                        "missing authentication credentials for REST request [/%s]"
                        % "/".join(parts) if not auth else "unable to authenticate with provided "
                        "credentials and anonymous access is not allowed for this request")
            r.headers = [("WWW-Authenticate", 'ApiKey, Basic realm="security", charset="UTF-8"')]
            raise r
        if len(body) > max_content:
            stats["too_large"] += 1
            raise Refusal(413, "content_too_long_exception",
                          "request content is too long: %d > %d" % (len(body), max_content))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        f = faults
        if f.get("count", 0) > 0 and f.get("path", "") in "/".join(parts):
            f["count"] -= 1
            stats["status_faults"] += 1
            st = int(f.get("status", 503))
            r = Refusal(st, "es_rejected_execution_exception" if st == 429 else "unavailable",
                        "injected %d" % st)
            if f.get("retry_after"):
                r.headers = [("Retry-After", str(f["retry_after"]))]
            raise r
        if not parts:
            return 200, {"name": "fake", "cluster_name": "pgsink-test",
                         "version": {"number": "8.13.0"}, "tagline": "You Know, for Search"}
        ctype = self.headers.get("Content-Type", "")
        if body and not (ctype.startswith("application/json") or
                         ctype.startswith("application/x-ndjson")):
            raise Refusal(406, "illegal_argument_exception",
                          "Content-Type header [%s] is not supported" % ctype)
        last = parts[-1]
        if last == "_bulk" and method in ("POST", "PUT"):
            return self.bulk(parts, body, query)

        def as_json():
            try:
                return json.loads(body) if body else {}
            except ValueError:
                raise Refusal(400, "parse_exception", "request body is not JSON")
        if len(parts) == 1 and method == "PUT":
            return 200, create_index(parts[0], as_json())
        if len(parts) == 1 and method == "DELETE":
            n, index = index_of(parts[0])
            if n != parts[0]:
                raise Refusal(400, "illegal_argument_exception",
                              "The provided expression [%s] matches an alias, specify the "
                              "corresponding concrete indices instead." % parts[0])
            del state["indices"][n]
            return 200, {"acknowledged": True}
        if len(parts) == 1 and method == "GET":
            n, index = index_of(parts[0])
            return 200, {n: {"mappings": mapping_view(index), "aliases": index["aliases"]}}
        if last == "_mapping" and method == "GET":
            n, index = index_of(parts[0])
            return 200, {n: {"mappings": mapping_view(index)}}
        if last == "_mapping" and method in ("PUT", "POST"):
            return 200, put_mapping(parts[0], as_json())
        if last == "_refresh" and method in ("POST", "GET"):
            n, index = index_of(parts[0])
            index["refreshed"] = state["seq"]
            stats["refresh"] += 1
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if last == "_mget" and method in ("POST", "GET"):
            return 200, mget(parts[0] if len(parts) > 1 else None, as_json())
        if last == "_delete_by_query" and method == "POST":
            return 200, delete_by_query(parts[0], as_json(), query)
        raise Refusal(405 if len(parts) <= 2 else 400, "illegal_argument_exception",
                      "Incorrect HTTP method for uri [/%s] and method [%s]" % ("/".join(parts),
                                                                              method))

    def bulk(self, parts, body, query):
        ops = parse_bulk(body, parts[0] if len(parts) > 1 else None)
        if faults.get("garbage", 0) > 0:
            faults["garbage"] -= 1
            stats["garbage"] += 1
            page = b"<html><body>502 Bad Gateway (a proxy)</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return None
        stats["bulk"] += 1
        stats["bulk_items_max"] = max(stats["bulk_items_max"], len(ops))
        items = [apply_op(*op) for op in ops]
        if query.get("refresh") in (["true"], ["wait_for"]):
            for index in state["indices"].values():
                index["refreshed"] = state["seq"]
        errors = any("error" in next(iter(it.values())) for it in items)
        if faults.get("drop_after_apply", 0) > 0:
            faults["drop_after_apply"] -= 1
            stats["dropped"] += 1
            self.close_connection = True
            self.connection.shutdown(2)
            return None
        return 200, {"took": 1, "errors": errors, "items": items}


def orphan_watch(parent):
    """Exit when the test that started us is gone."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def on_term(signum, frame):
    save_state()
    os._exit(0)


signal.signal(signal.SIGTERM, on_term)
threading.Thread(target=orphan_watch, args=(os.getppid(),), daemon=True).start()
http.server.ThreadingHTTPServer.request_queue_size = 64  # every connection of a sink at once
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.daemon_threads = True
server.serve_forever()
