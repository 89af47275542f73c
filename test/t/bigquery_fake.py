#!/usr/bin/env python3
"""A strict local Google BigQuery for pgsink's tests (issue 13).

    bigquery_fake.py --port PORT --project PROJECT [--project P2 ...]
                     --account EMAIL=PUBLIC_KEY_PEM[=KEY_ID] [--account ...]
                     --token-uri http://127.0.0.1:PORT/token
                     [--config '{"max_rows": 500, ...}'] [--log FILE]

Python 3 standard library, plus Debian's python3-cryptography (RS256) and
python3-avro (Avro object container files). HTTP/1.1 (keep-alive, chunked
request bodies, Expect: 100-continue), one thread per connection. It listens on
127.0.0.1 and exits when the process that started it is gone. State is in
memory only: a restart of the fake forgets everything (simulate outages with
faults instead).

For benchmarks (test/bench/bigquery_fake_bench.py measures the fake alone:
about 30k rows/s through insertAll with every value checked, 185k without;
10-15k rows/s of Avro decoded and checked by python3-avro, 1M+ counted),
start it with --config '{"record_ids": false, "store_rows": false,
"check_values": false, "load_check": "schema"}': requests, limits, schemas
and the Avro framing are still checked, values not, rows only counted.

The aim: traffic this fake accepts, BigQuery accepts too. Where BigQuery is
lenient in ways a lossless sink must not rely on, the fake is stricter, and says
so below ("stricter:"). Every refusal names what was wrong and what to send.

==============================================================================
THE RAW-TABLE CONTRACT (issue 13), checked by /_fake/current
==============================================================================
Per captured table <schema>.<table>, the sink makes in its dataset:
  * a raw table `<schema>_<table>_raw` with the row's columns (NULLABLE, or
    REPEATED for arrays) followed by
        _pgsink_lsn        INT64     REQUIRED  commit LSN as a number (pg_lsn - '0/0')
        _pgsink_sequence   INT64     REQUIRED  the change's sequence in its transaction
        _pgsink_op         STRING    REQUIRED  insert | update | delete | truncate | import |
                                               resync_end (with _pgsink_resync_since INT64:
                                               rows before it are gone)
        _pgsink_timestamp  TIMESTAMP REQUIRED  commit time
        _pgsink_xid        INT64     NULLABLE  transaction id (NULL for imported rows)
        _pgsink_unchanged  STRING    REPEATED  columns left out by unchanged TOAST
    partitioned by DAY of _pgsink_timestamp
    (timePartitioning {"type": "DAY", "field": "_pgsink_timestamp"}).
    A delete row holds the old key (or the whole old row); a truncate row has
    NULL row columns. An update that changes the key is two rows with the
    same (lsn, sequence): a 'delete' of the old key and an 'update' of the new
    one (their insertIds must then differ, else BigQuery drops one of them).
  * a view `<schema>_<table>` (useLegacySql false) giving the current rows:
    per key, the latest row by (_pgsink_lsn, _pgsink_sequence); keys whose
    latest row is a delete are left out; rows before the last truncate (by
    (_pgsink_lsn, _pgsink_sequence)) are left out; a column listed in the
    winning row's _pgsink_unchanged takes its value from the latest earlier
    row of the same key (not a delete, not before the last truncate) that
    does not list it. Key values are compared as stored (typed). The key
    columns: /_fake/current's ?key=, else the raw table's clustering fields
    (clustering the raw table by its key, at most 4 columns, is what the
    fake expects; a longer key needs ?key=).
The fake does NOT run the view's SQL: /_fake/current computes the rule above
from the raw table the view references and checks that the view is a
standard-SQL view referencing that raw table and mentioning _pgsink_lsn,
_pgsink_sequence, _pgsink_op, _pgsink_unchanged and every key column. Whether
the SQL computes the same thing is the sink's test's business (run it on real
BigQuery once).

==============================================================================
AUTH
==============================================================================
POST <path of --token-uri>   (default /token)
  Content-Type: application/x-www-form-urlencoded, body
  grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>.
  The JWT (RFC 7523, as google-auth builds it): header {"alg": "RS256",
  "typ": "JWT", "kid": <private_key_id>} (alg must be RS256; kid, when sent,
  must be the account's key id); claims iss = the account's client_email,
  aud = the --token-uri exactly, scope (space-separated, required), iat and exp
  integers with exp > iat, exp - iat <= 3600, iat <= now + clock_skew,
  exp > now - clock_skew (clock_skew default 60 s); sub, if any, equal to
  iss. Signature: RS256 verified against the account's public key.
  200 {"access_token": "ya29.fake...", "expires_in": token_lifetime,
       "token_type": "Bearer"}
  400 {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
      (bad signature, wrong kid, alg not RS256), "Invalid JWT: Token must be a
      short-lived token (60 minutes) and in a reasonable timeframe. Check your
      iat and exp values in the JWT claim." (times), "Invalid JWT: Failed
      audience check. ..." (aud), "Invalid grant: account not found" (iss);
      "invalid_scope" (no scope); "invalid_request" (form, assertion missing,
      JWT not three base64url segments, claims not JSON);
      "unsupported_grant_type".
Every API call needs Authorization: Bearer <access token the fake issued,
not expired, not revoked>. Missing: 401 reason "required" ("Login
Required."); unknown/expired/revoked: 401 reason "authError" ("Invalid
Credentials"), both with WWW-Authenticate: Bearer ... error="invalid_token".
Scopes: https://www.googleapis.com/auth/bigquery or .../cloud-platform allow
everything; .../bigquery.insertdata only insertAll; else 403
"insufficientPermissions" ("Request had insufficient authentication scopes.").

==============================================================================
API  (base /bigquery/v2; uploads /upload/bigquery/v2)
==============================================================================
Errors have BigQuery's shape: {"error": {"code": N, "message": M, "errors":
[{"message": M, "domain": "global", "reason": R[, "location": L,
"locationType": T]}], "status": "NOT_FOUND"|...}}. Reasons used: invalid
(400), parseError (400), required/authError (401), insufficientPermissions,
rateLimitExceeded, quotaExceeded (403), notFound (404), duplicate (409),
resourceInUse (400), conditionNotMet (412), backendError (500/503),
internalError (500), rateLimitExceeded (429, injected).
Query parameters other than the method's own and the standard ones (alt=json,
prettyPrint, fields (ignored: full resources are returned), quotaUser, key,
$.xgafv, upload_protocol, uploadType) are refused: 400 'Unknown name'.
JSON bodies must be Content-Type application/json (Content-Encoding gzip
accepted) and hold only the resource's known keys (400 'Invalid JSON payload
received. Unknown name "x"').
Names: projects must be one of --project (else 404 "Not found: Project P");
dataset ids [A-Za-z0-9_]{1,1024}; table ids [A-Za-z0-9_]{1,1024} (stricter:
no Unicode); dataset and table ids are case-sensitive, as BigQuery's are by
default; field names [A-Za-z_][A-Za-z0-9_]{0,299}, unique ignoring case, not
starting with _TABLE_, _FILE_, _PARTITION, _ROW_TIMESTAMP, __ROOT__,
_COLIDENTIFIER, and matched ignoring case (insertAll, loads, patches), as
BigQuery does.

Datasets  /bigquery/v2/projects/{p}/datasets[/{d}]
  POST (insert: datasetReference{projectId = p, datasetId}, location default
  "US", description, labels, friendlyName, defaultTableExpirationMs ...):
  200 dataset; 409 duplicate "Already Exists: Dataset p:d".
  GET {d}: 200 / 404 notFound "Not found: Dataset p:d". GET list.
  DELETE {d}[?deleteContents=true]: 204; a dataset with tables without
  deleteContents: 400 resourceInUse.
Tables  /bigquery/v2/projects/{p}/datasets/{d}/tables[/{t}]
  POST (insert): tableReference{projectId, datasetId, tableId} matching the
  path; schema.fields[] {name, type, mode, fields (RECORD only), description,
  maxLength (STRING/BYTES), precision/scale (NUMERIC/BIGNUMERIC: NUMERIC
  1 <= P-S <= 29, 0 <= S <= 9; BIGNUMERIC 1 <= P-S <= 38, 0 <= S <= 38)};
  types STRING, BYTES, INTEGER|INT64, FLOAT|FLOAT64, BOOLEAN|BOOL, NUMERIC,
  BIGNUMERIC, DATE, TIME, DATETIME, TIMESTAMP, JSON, GEOGRAPHY (value not
  checked beyond "a string"), RECORD|STRUCT; mode NULLABLE (default) |
  REQUIRED | REPEATED. timePartitioning {type DAY|HOUR|MONTH|YEAR, field: a
  top-level DATE/TIMESTAMP/DATETIME column, not REPEATED, expirationMs}.
  clustering {fields: 1 to 4 top-level, non-repeated columns of type INT64,
  STRING, BOOL, DATE, DATETIME, TIMESTAMP, NUMERIC, BIGNUMERIC or GEOGRAPHY}.
  labels: keys [a-z][a-z0-9_-]{0,62}, values [a-z0-9_-]{0,63} (stricter:
  ASCII only), at most 64. A view: {"view": {"query": Q (at most 256 KB),
  "useLegacySql": false}} and no schema; useLegacySql absent or true is
  refused (BigQuery's default is legacy SQL, which the fake does not speak);
  the query must reference a table or view of the fake, backquoted, as
  `p.d.t` or `p`.`d`.`t` (p one of --project) or `d.t` (d an existing
  dataset), and no legacy [p:d.t]; a referenced table must exist.
  200 table resource; 409 "Already Exists: Table p:d.t"; 404 dataset.
  GET {t}: 200 (schema, type TABLE|VIEW, numRows, timePartitioning, view,
  clustering, etag ...) / 404 "Not found: Table p:d.t". As on BigQuery,
  numRows counts loaded rows only: streamed rows stay in streamingBuffer
  {estimatedRows, oldestEntryTime} (the fake never flushes it). A view has
  no schema here (the fake runs no SQL).
  PATCH or PUT {t} (If-Match etag honoured, 412 if stale): schema may only
  add NULLABLE or REPEATED fields (anywhere, also inside RECORDs) and relax
  REQUIRED to NULLABLE; every existing field must stay with its type, else 400
  "Provided Schema does not match Table p:d.t. Field x has changed type from
  A to B" / "... Field x is missing in new schema" / "Cannot add required
  fields to an existing schema. (field: x)". description, labels,
  friendlyName, expirationTime, clustering, view (views only) may change;
  timePartitioning may not.
  DELETE {t}: 204 (rows and insertId memory go with it).
tabledata.insertAll  POST .../tables/{t}/insertAll
  body {kind?, skipInvalidRows?, ignoreUnknownValues?, rows: [{insertId?,
  json: {...}}], traceId?}; templateSuffix refused (not supported).
  Limits (config; BigQuery's quotas page as remembered, the notes could not
  confirm them): rows per request max_rows (50000: BigQuery's maximum; 500
  is its recommendation), request bytes max_request_bytes (10 MB, after gzip
  is undone), insertId length max_insert_id (128): 400 invalid, nothing
  stored; row bytes max_row_bytes (10 MB; older pages said 1 MB): that row
  invalid. A VIEW: 400. A table younger than stream_after_create seconds
  (default 0): 404, as BigQuery answers just after a table is (re)created.
  A top-level column a patch added less than stream_after_patch seconds ago
  (default 0) is unknown to insertAll ("no such field"), as BigQuery's
  streaming sees new columns only after a while.
  Per row, per field: unknown field -> invalid "no such field: x."
  (unless ignoreUnknownValues); REQUIRED missing or null -> invalid "Missing
  required field: x."; REPEATED: a JSON array (null = empty), no null elements;
  RECORD: a JSON object, checked recursively. Values:
    INT64      JSON integer or decimal string, -2^63..2^63-1 (no 1.0, no bool)
    FLOAT64    JSON number, or a string: decimal/exponent, "NaN", "Infinity",
               "-Infinity"; finite values must be finite doubles
    NUMERIC    string (or JSON integer) decimal, optional exponent; at most
               29 integer and 9 fraction digits (precision/scale if set).
               stricter: a JSON number with a fraction is refused (a double
               is not exact) and more fraction digits are refused, not rounded
    BIGNUMERIC same, |v| <= 5.78960446186580977117854925043439539266E+38,
               at most 38 fraction digits
    BOOL       JSON true/false, or "true"/"false" (any case)
    STRING     JSON string (stricter: no numbers), valid Unicode, maxLength chars
    BYTES      standard base64 with padding, maxLength bytes
    DATE       YYYY-[M]M-[D]D, 0001-01-01..9999-12-31
    TIME       [H]H:[M]M:[S]S[.F{1,6}], 00:00:00..23:59:59.999999 (no 24:00)
    DATETIME   YYYY-[M]M-[D]D[( |T)[H]H:[M]M:[S]S[.F{1,6}]], no time zone
    TIMESTAMP  as DATETIME plus an optional zone: Z, UTC, +HH[:MM], or an IANA
               name after a space; or a JSON number of epoch seconds; the
               instant within 0001-01-01..9999-12-31 UTC
    JSON       a string holding JSON text (stricter: not a bare object);
               numbers must fit int64/uint64 or survive a float64 round trip
               (BigQuery refuses 21-digit integers), depth <= 500
  A row with a time-partitioning column outside 1825 days in the past .. 366
  days in the future (partition_window, default on) -> invalid.
  With skipInvalidRows false (the default) and any row invalid: nothing is
  stored, HTTP 200 with insertErrors for every row: the bad rows' errors
  (reason "invalid", location = field) and {reason: "stopped"} for the
  others. With skipInvalidRows true: the valid rows are stored, the invalid
  ones reported. insertId: a row whose insertId was stored into the same
  table within dedup_seconds (default 60; "dedup": false turns it off) is
  dropped silently (counted in /_fake/stats "deduplicated").
  200 {"kind": "bigquery#tableDataInsertAllResponse"[, "insertErrors": [...]]}.
Jobs (load)
  POST /upload/bigquery/v2/projects/{p}/jobs?uploadType=multipart
    Content-Type multipart/related; boundary=B; part 1 application/json (the
    job resource), part 2 the data (any media type).
  POST /upload/bigquery/v2/projects/{p}/jobs?uploadType=resumable
    body: the job resource (JSON, required: the fake checks it here, and
    again, with the jobId, on the final PUT); X-Upload-Content-Length, if
    sent, must be the size finally uploaded. 200, Location:
    http://<host>/upload/bigquery/v2/projects/{p}/jobs?uploadType=resumable&
    upload_id=<id>. Then PUT the data there in one request, or in chunks
    with Content-Range: bytes a-b/total (or bytes a-b/* until the last);
    308 with Range: bytes=0-n after a partial chunk; the last chunk creates
    the job: 200 job resource, or 409 when its jobId exists (as BigQuery
    does: on the final request). PUT with Content-Range: bytes */total asks
    the status. Unknown upload_id: 404.
  POST /bigquery/v2/projects/{p}/jobs without media: a load needs sourceUris
    (Cloud Storage), which the fake has not: 400 invalid.
  Job resource: jobReference{projectId = p, jobId ([A-Za-z0-9_-]{1,1024};
  generated when absent), location (default: the dataset's)},
  configuration.load {destinationTable{projectId, datasetId, tableId},
  sourceFormat AVRO | NEWLINE_DELIMITED_JSON (else 400: the fake loads those
  two), writeDisposition WRITE_APPEND (default) | WRITE_TRUNCATE |
  WRITE_EMPTY, createDisposition CREATE_IF_NEEDED (default; the fake then
  needs configuration.load.schema) | CREATE_NEVER, useAvroLogicalTypes,
  schemaUpdateOptions [ALLOW_FIELD_ADDITION, ALLOW_FIELD_RELAXATION],
  ignoreUnknownValues, maxBadRecords (NDJSON only), schema}.
  Duplicate jobId in the project (whatever the first job's outcome): 409
  duplicate "Already Exists: Job p:LOCATION.jobId", nothing loaded.
  The job is PENDING, then RUNNING, then DONE: job_seconds (default 0.3)
  after its insert, a third of it pending. At DONE the data is checked and
  the rows appended at once, or none and status.errorResult {reason
  "invalid", message}. Avro checks: an object container file (magic, header,
  every block's size and sync marker, codec null or deflate and every deflate
  block inflating); its writer schema a record; each field matched to a column
  ignoring case: Avro types map to boolean->BOOL, int/long->INT64,
  float/double->FLOAT64, bytes/fixed->BYTES, string/enum->STRING,
  record->RECORD, array->REPEATED (items not nullable), ["null", T] or
  [T, "null"] -> NULLABLE T (other unions refused); with useAvroLogicalTypes:
  int date->DATE, int time-millis/long time-micros->TIME, long
  timestamp-millis/-micros->TIMESTAMP, long local-timestamp-millis/-micros
  and string logicalType datetime->DATETIME; without it these load as their
  base type (a TIMESTAMP column then refuses a long). Always: bytes/fixed
  decimal(P,S)->NUMERIC if S <= 9 and P-S <= 29, else BIGNUMERIC if S <= 38
  and P-S <= 38 (a NUMERIC decimal also fits a BIGNUMERIC column); string
  with "sqlType": "JSON"->JSON (stricter: a plain string does not load into
  JSON). The mapped type must equal the column's; a nullable Avro field into
  a REQUIRED column, a REQUIRED column the file lacks, a field the table
  lacks (without ALLOW_FIELD_ADDITION, which then adds it NULLABLE) fail the
  job: "Provided Schema does not match Table p:d.t. ..."; with
  ALLOW_FIELD_RELAXATION the first two make the (top-level) column NULLABLE. Then every value
  is checked as insertAll checks it (ranges, JSON numbers ...; a decimal
  with more digits than its schema's precision fails the job, where
  python3-avro alone would round it), unless
  load_check is "schema" (for benchmarks: python3-avro decodes some 10^4
  rows/s): then the file's framing and schema are checked, its rows counted
  from the block headers, and not stored (num_rows counts them).
  Beware: avro-c 1.11.1's file writer (Debian's libavro) drops logicalType,
  decimal precision/scale and sqlType from the schema it writes in the
  header (checked with avro_file_writer_create_with_codec; 079 shows it): its
  files load timestamps as INTEGER, decimals as BYTES, JSON as STRING, and
  BigQuery, like this fake, then fails a load into TIMESTAMP, NUMERIC or
  JSON columns. Write the header (schema JSON) yourself.
  GET /bigquery/v2/projects/{p}/jobs/{jobId}[?location=L]: the job
  (status.state, status.errorResult, statistics.load.outputRows ...); 404
  "Not found: Job p:L.jobId" (also for a wrong location).

Queries (jobs.query): the fake runs no SQL but the one shape pgsink sends to
read the values a key change left unchanged (TOAST) for old keys:
  POST /bigquery/v2/projects/{p}/queries  body {query, useLegacySql: false
    (required), parameterMode: NAMED, queryParameters [{name, parameterType
    {type: scalar}, parameterValue {value: "text"}}], location (must be the
    dataset's, else 404), formatOptions {useInt64Timestamp}, timeoutMs,
    useQueryCache, maxResults ...}; query: parts joined by " UNION ALL ", each
      SELECT <n> AS _pgsink_n{, ARRAY_AGG(IF(_pgsink_op = 'delete' OR "<c>" IN
      UNNEST(_pgsink_unchanged), NULL, STRUCT(`<c>` AS v)) IGNORE NULLS ORDER
      BY _pgsink_lsn DESC, _pgsink_sequence DESC LIMIT 1) AS `<c>`} FROM
      `<p>.<d>.<raw table>` WHERE {`<key column>` = @<param> AND
      }(_pgsink_lsn < @<l> OR (_pgsink_lsn = @<l> AND _pgsink_sequence < @<s>))
    with the same columns in every part, n = 0, 1, 2 ...; parameters of the
    compared column's type (else 400 "No matching signature"), every @name
    defined. Anything else: 400 invalidQuery, saying the shape. Computed
    from the raw table's stored rows: per part one row, n and per column []
    (no row of the key before (lsn, sequence) sent a value) or [value] (the
    latest such row's: not a delete, the column not in _pgsink_unchanged).
    200 {kind: bigquery#queryResponse, jobReference {projectId, jobId,
    location}, jobComplete, schema {fields: _pgsink_n INTEGER, each column
    RECORD REPEATED [v T]}, totalRows, rows [{f: [{v}]}] (f/v: every scalar a
    string; TIMESTAMP as microseconds with useInt64Timestamp, else seconds;
    DATETIME with a T; JSON its text), pageToken when more rows than
    query_page_rows (or maxResults)}; jobComplete false (no schema, no rows)
    until query_seconds after the query.
  GET /bigquery/v2/projects/{p}/queries/{jobId}[?location=L&pageToken=T&
    startIndex=N&maxResults=N&timeoutMs=N&formatOptions.useInt64Timestamp=
    true|false] (getQueryResults): the same answer (kind
    bigquery#getQueryResultsResponse) from that page; 404 for an unknown
    job or another location.

==============================================================================
CONTROL  (under /_fake/, no auth; JSON in and out)
==============================================================================
POST /_fake/config   {"max_rows": N, "max_request_bytes": N, "max_row_bytes": N,
        "max_insert_id": N,
        "dedup": bool, "dedup_seconds": S, "token_lifetime": S,
        "clock_skew": S, "job_seconds": S, "stream_after_create": S,
        "stream_after_patch": S,
        "partition_window": bool, "record_ids": bool (log insertIds of every
        request; default true), "store_rows": bool (keep rows; default true;
        false only counts them: for benchmarks), "load_check": "full" |
        "schema" (see load jobs), "check_values": bool (default true; false:
        insertAll checks the request's shape, limits and insertIds but not
        the rows' fields, and stores them as sent: for benchmarks that
        measure the sender, not the fake), "query_seconds": S (jobs.query
        answers jobComplete false until then; default 0), "query_page_rows":
        N (rows per page of a query's answer; default 100000)}
                                          -> the whole config
GET  /_fake/config
POST /_fake/faults   {"rules": [RULE, ...]} appends rules (a rule applies to
        requests of its "match": a kind from the list below, or "any"
        (default; the token endpoint only with match "token"); "count" N
        (default 1; null = until cleared) answers, then it is spent):
        {"kind": "status", "status": 500|503|429|403|400..., "reason": R,
         "message": M, "retry_after": "2" (header), "body": false (an empty
         500 body, as a GFE sends)}       answer this error, do nothing
        {"kind": "token_error", "error": "invalid_grant", "status": 400}
                                          the token endpoint refuses
        {"kind": "slow", "seconds": S}   wait S seconds, then serve
        {"kind": "reset"}                close the connection, do nothing
        {"kind": "apply_then_drop"}      serve, then close the connection
                                          without answering
        {"kind": "row_error", "value": V, "field": F (optional), "reason":
         "invalid", "message": M}         insertAll: rows whose F (else any
                                          top-level field) equals V (JSON
                                          equality) get this error (then
                                          "stopped" for the others unless
                                          skipInvalidRows)
        {"kind": "job_error", "reason": "backendError", "message": M}
                                          the next load job ends DONE with
                                          this errorResult, nothing loaded
POST /_fake/faults/clear                  drop every rule
GET  /_fake/faults                        the rules left
POST /_fake/outage   {"seconds": S}      answers, then the fake is down for S
                                          seconds: connections refused, open
                                          ones closed; then back, state kept
POST /_fake/revoke_tokens                 every issued token becomes invalid
                                          (401 authError on next use)
GET  /_fake/tables[?dataset=D]           [{project, dataset, table, type,
        schema, timePartitioning, clustering, view, num_rows, created}]
GET  /_fake/dump/<dataset>/<table>[?project=P]
        {"schema": [...], "rows": [{column: typed value}]} in storage order;
        typed: INT64 number; FLOAT64 a string as PostgreSQL prints a float8
        ("0.1", "1e+15", "-0", "NaN", "Infinity", "-Infinity");
        NUMERIC/BIGNUMERIC normalized decimal string ("1.5", "0", no
        exponent); BOOL true/false; STRING; BYTES canonical base64; DATE
        "YYYY-MM-DD"; TIME "HH:MM:SS[.ffffff]" and DATETIME "YYYY-MM-DD
        HH:MM:SS[.ffffff]" and TIMESTAMP "YYYY-MM-DD HH:MM:SS[.ffffff]+00"
        (UTC; trailing zeros of the fraction cut, as PostgreSQL prints);
        JSON canonical text (sorted keys, compact: SQL NULL is null, JSON null
        is "null"); REPEATED arrays ([] for NULL); RECORD objects.
GET  /_fake/current/<dataset>/<view>[?key=a,b][&project=P]
        {"columns": [...], "key": [...], "rows": [...sorted by key...],
         "raw_table": T, "unresolved": [{key, column}], "ambiguous": [{key,
         lsn, sequence, rows}]}: the view's rows by the rule above (key: the
        parameter, else the raw table's clustering fields). 400 with the
        reason when the view or the raw table breaks the contract.
        "unresolved": unchanged columns no earlier row sent (their value is
        null). "ambiguous": keys whose latest (lsn, sequence) holds
        different rows (the same row twice, a replay, is fine): a view would
        pick one of them at random.
GET  /_fake/jobs      [{jobId, project, location, state, errorResult,
        outputRows, sourceFormat, destination, upload ("multipart" |
        "resumable"), bytes}]
GET  /_fake/requests[?since=N]  [{n, kind, method, path, status, rows,
        bytes, insert_ids (insertAll, when record_ids), job_id}]
GET  /_fake/stats     {"requests": {kind: {status: count}}, "rows_stored"
        (streamed and loaded), "rows_loaded",
        "deduplicated", "tokens_issued", "token_refusals", "auth_refusals",
        "max_concurrent"}
Request kinds: token, datasets.insert, datasets.get, datasets.list,
datasets.delete, tables.insert, tables.get, tables.list, tables.patch,
tables.update, tables.delete, insertAll, jobs.insert (metadata and
multipart, and the first request of a resumable upload), upload (the PUTs of
a resumable upload), jobs.get, jobs.query, jobs.getQueryResults, unknown.
"""
import argparse
import base64
import datetime
import decimal
import gzip
import http.server
import io
import json
import math
import os
import re
import secrets
import socket
import sys
import threading
import time
import urllib.parse
import zlib
import zoneinfo

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

# Every thread copies DefaultContext: enough digits for any BIGNUMERIC.
decimal.DefaultContext.prec = 200
decimal.setcontext(decimal.Context(prec=200))

CONFIG = {
    "max_rows": 50000,
    "max_request_bytes": 10 * 1024 * 1024,
    "max_row_bytes": 10 * 1024 * 1024,
    "max_insert_id": 128,
    "dedup": True,
    "dedup_seconds": 60.0,
    "token_lifetime": 3600,
    "clock_skew": 60,
    "job_seconds": 0.3,
    "stream_after_create": 0.0,
    "stream_after_patch": 0.0,
    "partition_window": True,
    "record_ids": True,
    "store_rows": True,
    "load_check": "full",
    "check_values": True,
    "query_seconds": 0.0,
    "query_page_rows": 100000,
}

STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                404: "NOT_FOUND", 409: "ALREADY_EXISTS", 412: "FAILED_PRECONDITION",
                413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
DEFAULT_REASONS = {400: "invalid", 401: "authError", 403: "rateLimitExceeded", 404: "notFound",
                   409: "duplicate", 412: "conditionNotMet", 429: "rateLimitExceeded",
                   500: "backendError", 502: "backendError", 503: "backendError",
                   504: "backendError"}

SCOPE_ALL = ("https://www.googleapis.com/auth/bigquery",
             "https://www.googleapis.com/auth/cloud-platform")
SCOPE_INSERT = "https://www.googleapis.com/auth/bigquery.insertdata"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"

TYPE_ALIASES = {"INTEGER": "INT64", "INT64": "INT64", "FLOAT": "FLOAT64", "FLOAT64": "FLOAT64",
                "BOOLEAN": "BOOL", "BOOL": "BOOL", "RECORD": "RECORD", "STRUCT": "RECORD",
                "STRING": "STRING", "BYTES": "BYTES", "NUMERIC": "NUMERIC",
                "BIGNUMERIC": "BIGNUMERIC", "DATE": "DATE", "TIME": "TIME",
                "DATETIME": "DATETIME", "TIMESTAMP": "TIMESTAMP", "JSON": "JSON",
                "GEOGRAPHY": "GEOGRAPHY"}
# The name BigQuery uses in messages (the legacy names).
TYPE_DISPLAY = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")
ID_RE = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,1024}$")
RESERVED_PREFIXES = ("_TABLE_", "_FILE_", "_PARTITION", "_ROW_TIMESTAMP", "__ROOT__",
                     "_COLIDENTIFIER")

FIELD_KEYS = {"name", "type", "mode", "fields", "description", "policyTags", "maxLength",
              "precision", "scale", "roundingMode", "collation", "defaultValueExpression",
              "categories"}
TABLE_KEYS = {"kind", "etag", "id", "selfLink", "tableReference", "friendlyName",
              "description", "labels", "schema", "timePartitioning", "rangePartitioning",
              "clustering", "requirePartitionFilter", "expirationTime", "type", "view",
              "location", "creationTime", "lastModifiedTime", "numRows", "numBytes",
              "numLongTermBytes", "encryptionConfiguration", "defaultCollation",
              "maxStaleness", "tableConstraints", "streamingBuffer"}
DATASET_KEYS = {"kind", "etag", "id", "selfLink", "datasetReference", "friendlyName",
                "description", "labels", "location", "defaultTableExpirationMs",
                "defaultPartitionExpirationMs", "access", "creationTime", "lastModifiedTime",
                "defaultCollation", "isCaseInsensitive", "maxTimeTravelHours", "type",
                "storageBillingModel", "defaultEncryptionConfiguration"}
INSERTALL_KEYS = {"kind", "skipInvalidRows", "ignoreUnknownValues", "templateSuffix", "rows",
                  "traceId"}
ROW_KEYS = {"insertId", "json"}
JOB_KEYS = {"kind", "etag", "id", "selfLink", "jobReference", "configuration", "status",
            "statistics", "user_email", "principal_subject"}
JOBCONF_KEYS = {"load", "jobType", "labels", "dryRun", "jobTimeoutMs", "query", "copy",
                "extract"}
LOAD_KEYS = {"destinationTable", "sourceFormat", "writeDisposition", "createDisposition",
             "useAvroLogicalTypes", "schemaUpdateOptions", "ignoreUnknownValues",
             "maxBadRecords", "schema", "sourceUris", "timePartitioning", "clustering",
             "autodetect", "decimalTargetTypes", "destinationTableProperties", "encoding",
             "jsonExtension", "labels"}
STANDARD_PARAMS = {"alt", "prettyPrint", "fields", "quotaUser", "key", "$.xgafv",
                   "upload_protocol", "uploadType", "userIp", "callback"}

NUMERIC_MAX = decimal.Decimal("99999999999999999999999999999.999999999")
BIGNUMERIC_MAX = decimal.Decimal(
    "578960446186580977117854925043439539266.34992332820282019728792003956564819967")
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class ApiError(Exception):
    """A BigQuery error answer."""

    def __init__(self, code, message, reason=None, location=None, location_type=None,
                 headers=()):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or DEFAULT_REASONS.get(code, "invalid")
        self.location = location
        self.location_type = location_type
        self.headers = list(headers)

    def body(self):
        err = {"message": self.message, "domain": "global", "reason": self.reason}
        if self.location is not None:
            err["location"] = self.location
            if self.location_type:
                err["locationType"] = self.location_type
        return {"error": {"code": self.code, "message": self.message, "errors": [err],
                          "status": STATUS_NAMES.get(self.code, "UNKNOWN")}}


class OAuthError(Exception):
    def __init__(self, error, description, status=400):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


class RowError(Exception):
    def __init__(self, location, message, reason="invalid"):
        super().__init__(message)
        self.location = location
        self.message = message
        self.reason = reason


# ---------------------------------------------------------------------------
# State (one lock)

lock = threading.RLock()
args = None
accounts = {}    # email -> {"key": public key, "kid": id or None}
tokens = {}      # token -> {"expires": t, "scopes": set, "email": e}
datasets = {}    # (project, dataset) -> Dataset
jobs = {}        # (project, jobId) -> Job
queries = {}     # (project, jobId) -> the answer of a jobs.query (see lookup_query)
uploads = {}     # upload_id -> {...}
rules = []
connections = set()  # open client connections (an outage closes them)
outage = {"server": None, "until": 0.0}
request_log = []
stats = {"requests": {}, "rows_stored": 0, "rows_loaded": 0, "deduplicated": 0, "tokens_issued": 0,
         "token_refusals": 0, "auth_refusals": 0, "max_concurrent": 0}
concurrent = 0


def now_ms():
    return str(int(time.time() * 1000))


class Dataset:
    def __init__(self, project, dataset_id, resource):
        self.project = project
        self.id = dataset_id
        self.location = resource.get("location") or "US"
        self.resource = resource
        self.tables = {}  # id (case-sensitive, as BigQuery's) -> Table
        self.created = now_ms()

    def to_json(self):
        r = {k: v for k, v in self.resource.items() if k not in ("kind", "etag", "id", "selfLink")}
        r.update({"kind": "bigquery#dataset", "id": f"{self.project}:{self.id}",
                  "etag": base64.b64encode(self.created.encode()).decode(),
                  "datasetReference": {"projectId": self.project, "datasetId": self.id},
                  "location": self.location, "creationTime": self.created,
                  "lastModifiedTime": self.created, "type": "DEFAULT",
                  "selfLink": f"/bigquery/v2/projects/{self.project}/datasets/{self.id}"})
        return r


class Table:
    def __init__(self, dataset, table_id):
        self.dataset = dataset
        self.id = table_id
        self.fields = []
        self.view = None
        self.time_partitioning = None
        self.clustering = None
        self.extra = {}
        self.rows = []  # compact JSON text of the typed rows
        self.row_count = 0  # all rows
        self.streamed = 0  # of which streamed (in the "streaming buffer")
        self.hidden = {}  # lower-case column name -> when streaming sees it
        self.oldest_streamed = None
        self.dedup = {}  # insertId -> time stored
        self.created = time.time()
        self.version = 1

    @property
    def kind(self):
        return "VIEW" if self.view is not None else "TABLE"

    def ref(self):
        return f"{self.dataset.project}:{self.dataset.id}.{self.id}"

    def etag(self):
        return base64.b64encode(f"{self.id}:{self.version}".encode()).decode()

    def to_json(self):
        r = dict(self.extra)
        r.update({"kind": "bigquery#table", "id": self.ref(), "etag": self.etag(),
                  "selfLink": f"/bigquery/v2/projects/{self.dataset.project}/datasets/"
                              f"{self.dataset.id}/tables/{self.id}",
                  "tableReference": {"projectId": self.dataset.project,
                                     "datasetId": self.dataset.id, "tableId": self.id},
                  "type": self.kind, "location": self.dataset.location,
                  "creationTime": str(int(self.created * 1000)),
                  "lastModifiedTime": str(int(self.created * 1000))})
        if self.view is not None:
            r["view"] = dict(self.view)
        else:
            # As BigQuery: streamed rows are in the streaming buffer, not in
            # numRows (the fake never flushes the buffer).
            r["numRows"] = str(self.row_count - self.streamed)
            if self.streamed:
                r["streamingBuffer"] = {"estimatedRows": str(self.streamed),
                                        "oldestEntryTime": str(int(self.oldest_streamed * 1000))}
            r["numBytes"] = str(sum(len(x) for x in self.rows))
        if self.fields:
            r["schema"] = {"fields": self.fields}
        if self.time_partitioning:
            r["timePartitioning"] = self.time_partitioning
        if self.clustering:
            r["clustering"] = self.clustering
        return r


class Job:
    def __init__(self, project, job_id, location, resource, data, upload):
        self.project = project
        self.id = job_id
        self.location = location
        self.resource = resource
        self.data = data
        self.upload = upload
        self.created = time.time()
        self.state = "PENDING"
        self.error = None
        self.output_rows = 0
        self.started = None
        self.ended = None
        self.input_bytes = len(data or b"")
        self.email = ""

    def to_json(self):
        r = {"kind": "bigquery#job", "id": f"{self.project}:{self.location}.{self.id}",
             "etag": base64.b64encode(f"{self.id}:{self.state}".encode()).decode(),
             "selfLink": f"/bigquery/v2/projects/{self.project}/jobs/{self.id}"
                         f"?location={self.location}",
             "user_email": self.email,
             "jobReference": {"projectId": self.project, "jobId": self.id,
                              "location": self.location},
             "configuration": self.resource.get("configuration", {}),
             "status": {"state": self.state},
             "statistics": {"creationTime": str(int(self.created * 1000))}}
        r["configuration"].setdefault("jobType", "LOAD")
        if self.started:
            r["statistics"]["startTime"] = str(int(self.started * 1000))
        if self.state == "DONE":
            r["statistics"]["endTime"] = str(int(self.ended * 1000))
            if self.error:
                r["status"]["errorResult"] = self.error
                r["status"]["errors"] = [self.error]
            else:
                r["statistics"]["load"] = {"inputFiles": "1",
                                           "inputFileBytes": str(self.input_bytes),
                                           "outputRows": str(self.output_rows),
                                           "outputBytes": "0", "badRecords": "0"}
        return r


# ---------------------------------------------------------------------------
# Value checks (insertAll, NDJSON loads, Avro loads): a value as sent ->
# the typed value stored, or RowError.

DATE_RE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
TIME_RE = re.compile(r"^(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,6}))?$")
DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,6}))?)?$")
TIMESTAMP_RE = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[Tt ](\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,6}))?)?"
    r"(?:\s*(Z|z|UTC|[+-]\d{1,2}(?::?\d{2})?)| ([A-Za-z][A-Za-z0-9_+/-]*))?$")
INT_RE = re.compile(r"^[+-]?\d+$")
DEC_RE = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
B64_RE = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


def float_text(f):
    """A double as PostgreSQL's float8 prints it (shortest round-trip digits;
    fixed notation for decimal exponents -4..14, else d.ddde+XX)."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "Infinity" if f > 0 else "-Infinity"
    if f == 0:
        return "-0" if math.copysign(1, f) < 0 else "0"
    sign, raw, exp = decimal.Decimal(repr(f)).as_tuple()
    sci = exp + len(raw) - 1  # the decimal exponent of the first digit
    digits = "".join(map(str, raw)).rstrip("0")
    out = "-" if sign else ""
    if -4 <= sci < 15:
        if sci < 0:
            out += "0." + "0" * (-sci - 1) + digits
        elif len(digits) <= sci + 1:
            out += digits + "0" * (sci + 1 - len(digits))
        else:
            out += digits[:sci + 1] + "." + digits[sci + 1:]
    else:
        out += digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        out += "e" + ("-" if sci < 0 else "+") + "%02d" % abs(sci)
    return out


def fmt_fraction(us):
    return ("." + ("%06d" % us).rstrip("0")) if us else ""


def fmt_date(d):
    return "%04d-%02d-%02d" % (d.year, d.month, d.day)


def fmt_time(t):
    return "%02d:%02d:%02d%s" % (t.hour, t.minute, t.second, fmt_fraction(t.microsecond))


def fmt_datetime(d):
    return fmt_date(d) + " " + fmt_time(d)


def fmt_timestamp(d):
    d = d.astimezone(datetime.timezone.utc)
    return fmt_datetime(d) + "+00"


def bad(kind, value):
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > 100:
        text = text[:100] + "..."
    return f"Cannot convert value to {kind} (bad value): {text}"


def check_decimal(value, field, big):
    kind = "BIGNUMERIC" if big else "NUMERIC"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RowError(field["name"], f"Invalid {kind} value: {json.dumps(value)}")
    if isinstance(value, float):
        raise RowError(field["name"],
                       f"Invalid {kind} value: {value!r}: send NUMERIC and BIGNUMERIC values as "
                       "strings (this fake refuses JSON numbers with a fraction: a double is not "
                       "exact)")
    text = str(value)
    if not DEC_RE.match(text):
        raise RowError(field["name"], f"Invalid {kind} value: {text}")
    d = decimal.Decimal(text)
    if d == 0:
        d = decimal.Decimal(0)
    d = d.normalize() if d != 0 else decimal.Decimal(0)
    exp = d.as_tuple().exponent
    scale = max(0, -exp)
    int_digits = len("{:f}".format(abs(d).to_integral_value(rounding=decimal.ROUND_DOWN))) \
        if abs(d) >= 1 else 0
    if big:
        max_scale, limit = 38, BIGNUMERIC_MAX
    else:
        max_scale, limit = 9, NUMERIC_MAX
    p, s = field.get("precision"), field.get("scale")
    if p is not None:
        p, s = int(p), int(s or 0)
        max_scale = s
        if int_digits > p - s:
            raise RowError(field["name"], f"Invalid {kind}({p}, {s}) value: {text}: "
                                          f"more than {p - s} integer digits")
    if scale > max_scale:
        raise RowError(field["name"], f"Invalid {kind} value: {text}: more than {max_scale} "
                                      "digits after the decimal point (this fake refuses, "
                                      "BigQuery may round)")
    if abs(d) > limit:
        raise RowError(field["name"], f"Invalid {kind} value: {text}: out of range")
    out = "{:f}".format(d)
    return "0" if out in ("-0", "0") else out


def json_numbers_ok(value, depth=0):
    if depth > 500:
        raise ValueError("JSON nested deeper than 500 levels")
    if isinstance(value, dict):
        for v in value.values():
            json_numbers_ok(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            json_numbers_ok(v, depth + 1)


def parse_json_text(text):
    """JSON text as BigQuery's JSON type reads it, or ValueError."""
    def parse_int(s):
        n = int(s)
        if not (INT64_MIN <= n <= 2 ** 64 - 1) and not (
                len(s) < 400 and math.isfinite(float(n)) and int(float(n)) == n):
            raise ValueError(f"the number {s} fits neither int64 nor uint64 nor a double "
                             "exactly (BigQuery refuses it; send the value as a JSON string)")
        return n

    def parse_float(s):
        f = float(s)
        if math.isinf(f) or decimal.Decimal(s) != decimal.Decimal(repr(f)):
            raise ValueError(f"the number {s} cannot round-trip through a float64 "
                             "(BigQuery refuses it)")
        return f

    def no_constant(s):
        raise ValueError(f"{s} is not JSON")
    value = json.loads(text, parse_int=parse_int, parse_float=parse_float,
                       parse_constant=no_constant)
    json_numbers_ok(value)
    return value


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_date(text):
    m = DATE_RE.match(text)
    if not m:
        raise ValueError
    return datetime.date(int(m[1]), int(m[2]), int(m[3]))


def parse_time(text):
    m = TIME_RE.match(text)
    if not m:
        raise ValueError
    return datetime.time(int(m[1]), int(m[2]), int(m[3]), int((m[4] or "0").ljust(6, "0")))


def parse_datetime(text):
    m = DATETIME_RE.match(text)
    if not m:
        raise ValueError
    return datetime.datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4] or 0), int(m[5] or 0),
                             int(m[6] or 0), int((m[7] or "0").ljust(6, "0")))


def parse_timestamp(text):
    m = TIMESTAMP_RE.match(text)
    if not m:
        raise ValueError
    naive = datetime.datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4] or 0), int(m[5] or 0),
                              int(m[6] or 0), int((m[7] or "0").ljust(6, "0")))
    zone = m[8]
    if m[9]:
        try:
            tz = zoneinfo.ZoneInfo(m[9])
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError
        local = naive.replace(tzinfo=tz)
        offset = local.utcoffset()
    elif zone in (None, "Z", "z", "UTC"):
        offset = datetime.timedelta(0)
    else:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        hh = int(digits[:2]) if len(digits) >= 2 and len(digits) != 3 else int(digits[:1])
        mm = int(digits[-2:]) if len(digits) >= 3 else 0
        if hh > 14 or mm > 59:
            raise ValueError
        offset = sign * datetime.timedelta(hours=hh, minutes=mm)
    # The instant, range-checked in UTC (year 1..9999).
    utc = naive - offset
    return utc.replace(tzinfo=datetime.timezone.utc)


def check_value(value, field):
    """One non-null scalar value of field's type -> typed value."""
    t = TYPE_ALIASES[field["type"]]
    name = field["name"]
    if t == "INT64":
        if isinstance(value, bool):
            raise RowError(name, bad("integer", value))
        if isinstance(value, int):
            n = value
        elif isinstance(value, str) and INT_RE.match(value.strip()) and value == value.strip():
            n = int(value)
        else:
            raise RowError(name, bad("integer", value))
        if not INT64_MIN <= n <= INT64_MAX:
            raise RowError(name, bad("integer", value) + " (out of INT64 range)")
        return n
    if t == "FLOAT64":
        if isinstance(value, bool):
            raise RowError(name, bad("double", value))
        if isinstance(value, (int, float)):
            f = float(value)
        elif isinstance(value, str):
            if value in ("NaN", "Infinity", "-Infinity"):
                return value
            if not DEC_RE.match(value):
                raise RowError(name, bad("double", value))
            f = float(value)
        else:
            raise RowError(name, bad("double", value))
        if math.isinf(f):
            raise RowError(name, bad("double", value) + " (out of range)")
        return float_text(f)
    if t in ("NUMERIC", "BIGNUMERIC"):
        return check_decimal(value, field, t == "BIGNUMERIC")
    if t == "BOOL":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise RowError(name, bad("boolean", value))
    if t in ("STRING", "GEOGRAPHY"):
        if not isinstance(value, str):
            raise RowError(name, f"Cannot convert value to string: {json.dumps(value)} (this fake "
                                 "wants JSON strings for STRING columns)")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RowError(name, "Invalid string: not valid UTF-8 (a lone surrogate)")
        if field.get("maxLength") is not None and len(value) > int(field["maxLength"]):
            raise RowError(name, f"Field {name}: STRING({field['maxLength']}) has maximum length "
                                 f"{field['maxLength']} but got a value with length {len(value)}")
        return value
    if t == "BYTES":
        if not isinstance(value, str) or len(value) % 4 or not B64_RE.match(value):
            raise RowError(name, "Could not decode base64 string to bytes. Field: " + name)
        try:
            raw = base64.b64decode(value, validate=True)
        except ValueError:
            raise RowError(name, "Could not decode base64 string to bytes. Field: " + name)
        if field.get("maxLength") is not None and len(raw) > int(field["maxLength"]):
            raise RowError(name, f"Field {name}: BYTES({field['maxLength']}) has maximum length "
                                 f"{field['maxLength']} but got a value with length {len(raw)}")
        return base64.b64encode(raw).decode()
    if t == "DATE":
        try:
            return fmt_date(parse_date(value))
        except (ValueError, TypeError):
            raise RowError(name, bad("date", value))
    if t == "TIME":
        try:
            return fmt_time(parse_time(value))
        except (ValueError, TypeError):
            raise RowError(name, bad("time", value))
    if t == "DATETIME":
        try:
            return fmt_datetime(parse_datetime(value))
        except (ValueError, TypeError, OverflowError):
            raise RowError(name, bad("datetime", value))
    if t == "TIMESTAMP":
        try:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, (int, float)):
                if not math.isfinite(value):
                    raise ValueError
                return fmt_timestamp(EPOCH + datetime.timedelta(
                    microseconds=round(decimal.Decimal(repr(value)) * 1000000)))
            return fmt_timestamp(parse_timestamp(value))
        except (ValueError, TypeError, OverflowError):
            raise RowError(name, bad("timestamp", value))
    if t == "JSON":
        if not isinstance(value, str):
            raise RowError(name, f"Invalid JSON value for field {name}: send a string holding "
                                 "the JSON text (this fake refuses a bare JSON value)")
        try:
            return canonical_json(parse_json_text(value))
        except (ValueError, RecursionError) as e:
            raise RowError(name, f"Invalid JSON value for field {name}: {e}")
    raise RowError(name, f"the fake cannot check type {t}")


def check_row(row, fields, ignore_unknown, prefix=""):
    """A JSON object against fields -> typed dict; RowError on the first problem."""
    if not isinstance(row, dict):
        raise RowError(prefix.rstrip("."), f"Cannot convert value to a record: {json.dumps(row)}")
    cached = _index_cache.get(id(fields))
    if cached is None or cached[0] is not fields:
        if len(_index_cache) > 1000:
            _index_cache.clear()
        cached = _index_cache[id(fields)] = (fields, {f["name"].lower(): f for f in fields})
    by_name = cached[1]
    out = {}
    for key, value in row.items():
        f = by_name.get(key.lower())
        if f is None:
            if ignore_unknown:
                continue
            raise RowError(prefix + key, f"no such field: {prefix + key}.")
        if f["name"] in out:
            raise RowError(prefix + key, f"Duplicate field: {prefix + key} (names ignore case)")
        out[f["name"]] = check_field(value, f, ignore_unknown, prefix)
    for f in fields:
        if f["name"] not in out:
            if f.get("mode") == "REQUIRED":
                raise RowError(prefix + f["name"],
                               f"Missing required field: {prefix + f['name']}.")
            out[f["name"]] = [] if f.get("mode") == "REPEATED" else None
    return {f["name"]: out[f["name"]] for f in fields}


def check_field(value, f, ignore_unknown, prefix):
    mode = f.get("mode", "NULLABLE")
    record = TYPE_ALIASES[f["type"]] == "RECORD"
    name = prefix + f["name"]
    if mode == "REPEATED":
        if value is None:
            return []
        if not isinstance(value, list):
            raise RowError(name, f"Expected an array for repeated field: {name}.")
        out = []
        for v in value:
            if v is None:
                raise RowError(name, f"Array cannot have a null element; error in writing field "
                                     f"{name}")
            out.append(check_row(v, f["fields"], ignore_unknown, name + ".") if record
                       else check_scalar(v, f, name))
        return out
    if value is None:
        if mode == "REQUIRED":
            raise RowError(name, f"Missing required field: {name}.")
        return None
    if isinstance(value, list):
        raise RowError(name, f"Array specified for non-repeated field: {name}.")
    if record:
        return check_row(value, f["fields"], ignore_unknown, name + ".")
    return check_scalar(value, f, name)


_index_cache = {}  # id(fields) -> (fields, {lower-case name: field})


def check_scalar(value, f, name):
    try:
        return check_value(value, f)
    except RowError as e:
        e.location = name
        raise


# ---------------------------------------------------------------------------
# Schemas

def norm_type(t):
    return TYPE_ALIASES.get(str(t).upper())


def check_fields(fields, where="", top=True):
    """Validate (and normalize) a schema's fields; ApiError 400 if wrong."""
    if not isinstance(fields, list):
        raise ApiError(400, f"Invalid schema{where}: fields must be a list")
    seen = set()
    out = []
    for f in fields:
        if not isinstance(f, dict):
            raise ApiError(400, "Invalid field: not an object")
        unknown = set(f) - FIELD_KEYS
        if unknown:
            raise ApiError(400, 'Invalid JSON payload received. Unknown name '
                                f'"{sorted(unknown)[0]}"'
                                f' at \'table.schema.fields\': Cannot find field.')
        name = f.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ApiError(400, f"Invalid field name \"{name}\". Fields must contain only "
                                "letters, numbers, and underscores, start with a letter or "
                                "underscore, and be at most 300 characters long.")
        if top and name.upper().startswith(RESERVED_PREFIXES):
            raise ApiError(400, f"Invalid field name \"{name}\": the prefix is reserved")
        if name.lower() in seen:
            raise ApiError(400, f"Field {name} already exists in schema")
        seen.add(name.lower())
        t = norm_type(f.get("type", ""))
        if t is None:
            raise ApiError(400, f"Invalid value for type: {f.get('type')} is not a valid value"
                                f" (or a type this fake does not support; field {name})")
        mode = str(f.get("mode", "NULLABLE")).upper()
        if mode not in ("NULLABLE", "REQUIRED", "REPEATED"):
            raise ApiError(400, f"Invalid value for mode: {f.get('mode')} is not a valid value")
        g = dict(f)
        g["type"] = str(f["type"]).upper()
        g["mode"] = mode
        if t == "RECORD":
            if not f.get("fields"):
                raise ApiError(400, f"Field {name} is type RECORD but has no schema")
            g["fields"] = check_fields(f["fields"], where, top=False)
        elif "fields" in f:
            raise ApiError(400, f"Field {name} is type {g['type']} but has a schema (fields)")
        if ("precision" in f or "scale" in f) and t not in ("NUMERIC", "BIGNUMERIC"):
            raise ApiError(400, f"Field {name}: precision and scale are for NUMERIC and "
                                "BIGNUMERIC only")
        if "precision" in f:
            try:
                p, s = int(f["precision"]), int(f.get("scale", 0))
            except (TypeError, ValueError):
                raise ApiError(400, f"Field {name}: precision and scale must be integers")
            lim_i, lim_s = (29, 9) if t == "NUMERIC" else (38, 38)
            if not (1 <= p - s <= lim_i and 0 <= s <= lim_s):
                raise ApiError(400, f"Invalid {t} precision {p} and scale {s} for field {name}: "
                                    f"need 1 <= P-S <= {lim_i} and 0 <= S <= {lim_s}")
        elif "scale" in f:
            raise ApiError(400, f"Field {name}: scale needs precision")
        if "maxLength" in f and t not in ("STRING", "BYTES"):
            raise ApiError(400, f"Field {name}: maxLength is for STRING and BYTES only")
        out.append(g)
    return out


LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")


def check_labels(labels):
    """Labels as BigQuery takes them (stricter: ASCII only)."""
    if not isinstance(labels, dict) or len(labels) > 64:
        raise ApiError(400, "labels: an object of at most 64 labels")
    for k, v in labels.items():
        if not LABEL_KEY_RE.match(k) or not isinstance(v, str) or not LABEL_VALUE_RE.match(v):
            raise ApiError(400, f"Invalid label {k}={v!r}: keys start with a lowercase letter, "
                                "keys and values hold at most 63 lowercase letters, digits, _ "
                                "and -")


CLUSTER_TYPES = ("INT64", "STRING", "BOOL", "DATE", "DATETIME", "TIMESTAMP", "NUMERIC",
                 "BIGNUMERIC", "GEOGRAPHY")


def check_clustering(clustering, fields):
    """clustering {"fields": [...]}: at most 4 top-level, non-repeated columns of
    a type BigQuery clusters by."""
    if clustering is None:
        return None  # none (tables.patch: clustering removed)
    cols = clustering.get("fields") if isinstance(clustering, dict) else None
    if not isinstance(cols, list) or not 1 <= len(cols) <= 4 or set(clustering) - {"fields"}:
        raise ApiError(400, "clustering: {\"fields\": [1 to 4 column names]}")
    for c in cols:
        f = next((f for f in fields if f["name"].lower() == str(c).lower()), None)
        if f is None:
            raise ApiError(400, f"The field specified for clustering cannot be found in the "
                                f"schema. Invalid field: {c}.")
        if f.get("mode") == "REPEATED" or TYPE_ALIASES[f["type"]] not in CLUSTER_TYPES:
            raise ApiError(400, f"Field {c} is of type {f.get('mode', 'NULLABLE')} "
                                f"{f['type']}, which is not supported for clustering "
                                f"(clusterable: {', '.join(CLUSTER_TYPES)}, not repeated)")
    return {"fields": cols}


def type_name(f):
    return TYPE_DISPLAY.get(TYPE_ALIASES[f["type"]], TYPE_ALIASES[f["type"]])


def merge_schema(table, old, new, ref, relax=True, add=True):
    """The patched schema: old's fields kept (type unchanged, REQUIRED may
    relax), new NULLABLE/REPEATED fields added. ApiError 400 otherwise."""
    prefix = f"Provided Schema does not match Table {ref}."
    new_by = {f["name"].lower(): f for f in new}
    for o in old:
        n = new_by.get(o["name"].lower())
        if n is None:
            raise ApiError(400, f"{prefix} Field {o['name']} is missing in new schema")
        if TYPE_ALIASES[o["type"]] != TYPE_ALIASES[n["type"]]:
            raise ApiError(400, f"{prefix} Field {o['name']} has changed type from "
                                f"{type_name(o)} to {type_name(n)}")
        om, nm = o.get("mode", "NULLABLE"), n.get("mode", "NULLABLE")
        if om != nm and not (relax and om == "REQUIRED" and nm == "NULLABLE"):
            raise ApiError(400, f"{prefix} Field {o['name']} has changed mode from {om} to {nm}")
        if TYPE_ALIASES[o["type"]] == "RECORD":
            merge_schema(table, o["fields"], n["fields"], ref, relax, add)
    old_names = {f["name"].lower() for f in old}
    for n in new:
        if n["name"].lower() not in old_names:
            if not add:
                raise ApiError(400, f"{prefix} Cannot add fields (field: {n['name']})")
            if n.get("mode") == "REQUIRED":
                raise ApiError(400, "Cannot add required fields to an existing schema. "
                                    f"(field: {n['name']})")
    return new


# ---------------------------------------------------------------------------
# Faults

def take_rule(kind, kinds):
    """The first live rule of one of kinds that matches request kind; spends it."""
    with lock:
        for r in rules:
            if r.get("kind") not in kinds:
                continue
            match = r.get("match", "any")
            # token_error is for the token endpoint only; "any" means the API
            if (r.get("kind") == "token_error") != (kind == "token") and match != kind:
                continue
            if r.get("kind") == "token_error" and kind != "token":
                continue
            if match not in ("any", kind):
                continue
            if r.get("count", 1) is not None:
                if r.get("count", 1) <= 0:
                    continue
                r["count"] = r.get("count", 1) - 1
            rules[:] = [x for x in rules if x.get("count", 1) is None or x.get("count", 1) > 0]
            return dict(r)
    return None


def row_rules():
    with lock:
        return [r for r in rules if r.get("kind") == "row_error"]


def spend_row_rule(r):
    with lock:
        for x in rules:
            if x is r and x.get("count", 1) is not None:
                x["count"] = x.get("count", 1) - 1
        rules[:] = [x for x in rules if x.get("count", 1) is None or x.get("count", 1) > 0]


def fill_missing(row, fields):
    """A stored row under the table's present schema: columns added since it
    was stored are NULL (REPEATED: empty), as BigQuery reads them."""
    for f in fields:
        name = f["name"]
        if name not in row:
            row[name] = [] if f.get("mode") == "REPEATED" else None
        elif TYPE_ALIASES[f["type"]] == "RECORD" and row[name] is not None:
            for sub in (row[name] if f.get("mode") == "REPEATED" else [row[name]]):
                if isinstance(sub, dict):
                    fill_missing(sub, f["fields"])
    return row


def stored_rows(table):
    return [fill_missing(json.loads(r), table.fields) for r in table.rows]


# ---------------------------------------------------------------------------
# Views: the rule of issue 13

VIEW_REF_RE = re.compile(r"`([^`]+)`")


def view_references(query, project):
    """Tables the standard-SQL query references, backquoted, as (p, d, t):
    `p.d.t` and `p`.`d`.`t` with p one of the fake's projects, `d.t` with d
    a dataset of the view's project (other backquoted names are columns)."""
    refs = []
    for m in VIEW_REF_RE.finditer(query):
        parts = m[1].split(".")
        if len(parts) == 3 and parts[0] in args.project:
            refs.append(tuple(parts))
        elif len(parts) == 2 and (project, parts[0]) in datasets:
            refs.append((project, parts[0], parts[1]))
    for m in re.finditer(r"`([^`.]+)`\.`([^`.]+)`\.`([^`.]+)`", query):
        if m[1] in args.project:
            refs.append((m[1], m[2], m[3]))
    return refs


def check_view(view, project):
    if not isinstance(view, dict) or not isinstance(view.get("query"), str) \
            or not view["query"].strip():
        raise ApiError(400, "Invalid view: view.query must be a non-empty string")
    unknown = set(view) - {"query", "useLegacySql", "userDefinedFunctionResources",
                           "useExplicitColumnNames"}
    if unknown:
        raise ApiError(400, f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}"'
                            " at 'table.view': Cannot find field.")
    if view.get("useLegacySql") is not False:
        raise ApiError(400, "View useLegacySql is absent or true: BigQuery then reads the query "
                            "as legacy SQL (its default). Send \"useLegacySql\": false with a "
                            "standard-SQL query (this fake speaks standard SQL only).")
    q = view["query"]
    if len(q) > 256 * 1024:
        raise ApiError(400, "The view's query is longer than 256 KB")
    if re.search(r"\[[A-Za-z0-9_-]+:[A-Za-z0-9_]+\.[A-Za-z0-9_]+\]", q):
        raise ApiError(400, "Invalid view query: a legacy-SQL table reference [p:d.t] in a "
                            "standard-SQL view; write `p.d.t`")
    refs = view_references(q, project)
    if not refs:
        raise ApiError(400, "Invalid view query: it references no table as `project.dataset."
                            "table` (the fake checks the referenced tables exist)")
    found = []
    for p, d, t in refs:
        ds = datasets.get((p, d))
        table = ds.tables.get(t) if ds else None
        if table is None:
            loc = ds.location if ds else "US"
            raise ApiError(404, f"Not found: Table {p}:{d}.{t} was not found in location {loc}")
        found.append(table)
    return found


def current_rows(ds, view_name, key_param):
    """The view's rows per the issue 13 rule; ApiError 400 with the reason."""
    view = ds.tables.get(view_name)
    if view is None:
        raise ApiError(404, f"Not found: Table {ds.project}:{ds.id}.{view_name}")
    if view.view is None:
        raise ApiError(400, f"{view_name} is a table, not a view")
    if view.view.get("useLegacySql") is not False:
        raise ApiError(400, f"view {view_name}: useLegacySql is not false")
    bases = []
    for p, d, t in view_references(view.view["query"], ds.project):
        tds = datasets.get((p, d))
        table = tds.tables.get(t) if tds else None
        if table is None:
            raise ApiError(400, f"view {view_name} references `{p}.{d}.{t}`, which does not exist")
        if table.view is None and table not in bases:
            bases.append(table)
    if len(bases) != 1:
        raise ApiError(400, f"view {view_name} must reference exactly one raw table; it "
                            f"references {[b.id for b in bases]}")
    raw = bases[0]
    by = {f["name"]: f for f in raw.fields}
    contract = [("_pgsink_lsn", "INT64", "REQUIRED"), ("_pgsink_sequence", "INT64", "REQUIRED"),
                ("_pgsink_op", "STRING", "REQUIRED"),
                ("_pgsink_timestamp", "TIMESTAMP", "REQUIRED"),
                ("_pgsink_xid", "INT64", "NULLABLE"), ("_pgsink_unchanged", "STRING", "REPEATED")]
    for name, t, mode in contract:
        f = by.get(name)
        if f is None or TYPE_ALIASES[f["type"]] != t or f.get("mode", "NULLABLE") != mode:
            got = f and f"{f['type']} {f.get('mode', 'NULLABLE')}"
            raise ApiError(400, f"raw table {raw.id}: column {name} must be {t} {mode} "
                                f"(found: {got})")
    tp = raw.time_partitioning or {}
    if tp.get("type") != "DAY" or tp.get("field") != "_pgsink_timestamp":
        raise ApiError(400, f"raw table {raw.id}: must be partitioned by DAY of "
                            f"_pgsink_timestamp (timePartitioning is {raw.time_partitioning})")
    if key_param:
        key = [k for k in key_param.split(",") if k]
    else:
        key = list((raw.clustering or {}).get("fields", []))
    if not key:
        raise ApiError(400, "no key: pass ?key=col1,col2 (or cluster the raw table by the key)")
    columns = [f["name"] for f in raw.fields if not f["name"].startswith("_pgsink_")]
    lower = {c.lower(): c for c in columns}
    for k in key:
        if k.lower() not in lower:
            raise ApiError(400, f"key column {k} is not a column of {raw.id}")
    key = [lower[k.lower()] for k in key]
    q = view.view["query"]
    for word in ["_pgsink_lsn", "_pgsink_sequence", "_pgsink_op", "_pgsink_unchanged"] + key:
        if not re.search(r"(?<![A-Za-z0-9_])" + re.escape(word) + r"(?![A-Za-z0-9_])", q, re.I):
            raise ApiError(400, f"view {view_name}: its query never mentions {word}, which the "
                                "rule needs")
    rows = stored_rows(raw)
    for r in rows:
        if r["_pgsink_op"] not in ("insert", "update", "delete", "truncate", "import",
                                   "resync_end"):
            raise ApiError(400, f"raw table {raw.id}: _pgsink_op {r['_pgsink_op']!r} is none of "
                                "insert, update, delete, truncate, import, resync_end")
    rows.sort(key=lambda r: (r["_pgsink_lsn"], r["_pgsink_sequence"]))
    last_truncate = None
    for r in rows:
        if r["_pgsink_op"] == "truncate":
            last_truncate = (r["_pgsink_lsn"], r["_pgsink_sequence"])
    if last_truncate is not None:
        rows = [r for r in rows if (r["_pgsink_lsn"], r["_pgsink_sequence"]) > last_truncate]
    # The resync rule (pgsink's README, The changelog): at a resync_end, a row
    # not written at or after its _pgsink_resync_since is gone; the latest
    # resync that closed decides.
    since = [int(r["_pgsink_resync_since"]) for r in rows
             if r["_pgsink_op"] == "resync_end" and r.get("_pgsink_resync_since") is not None]
    if any(r["_pgsink_op"] == "resync_end" and r.get("_pgsink_resync_since") is None
           for r in rows):
        raise ApiError(400, f"raw table {raw.id}: a resync_end row without _pgsink_resync_since")
    if since:
        rows = [r for r in rows if int(r["_pgsink_lsn"]) >= max(since)]
    per_key = {}
    for r in rows:
        if r["_pgsink_op"] in ("truncate", "resync_end"):
            continue
        per_key.setdefault(json.dumps([r[k] for k in key]), []).append(r)
    out, unresolved, ambiguous = [], [], []
    for k, changes in per_key.items():
        win = changes[-1]
        # The same change stored twice (a replay after the insertId window) is
        # harmless; two different rows at the winner's (lsn, sequence) are not:
        # which one a view picks is up to BigQuery.
        top = (win["_pgsink_lsn"], win["_pgsink_sequence"])
        rivals = {json.dumps(c, sort_keys=True) for c in changes
                  if (c["_pgsink_lsn"], c["_pgsink_sequence"]) == top}
        if len(rivals) > 1:
            ambiguous.append({"key": json.loads(k), "lsn": top[0], "sequence": top[1],
                              "rows": len(rivals)})
        if win["_pgsink_op"] == "delete":
            continue
        row = {c: win[c] for c in columns}
        for c in win["_pgsink_unchanged"]:
            cname = lower.get(c.lower())
            if cname is None:
                raise ApiError(400, f"raw table {raw.id}: _pgsink_unchanged names {c!r}, which is "
                                    "not a column")
            value, found = None, False
            for earlier in reversed(changes[:-1]):
                if earlier["_pgsink_op"] == "delete":
                    continue
                if c.lower() in (u.lower() for u in earlier["_pgsink_unchanged"]):
                    continue
                value, found = earlier[cname], True
                break
            row[cname] = value
            if not found:
                unresolved.append({"key": json.loads(k), "column": cname})
        out.append(row)
    out.sort(key=lambda r: json.dumps([r[k] for k in key], sort_keys=True))
    return {"columns": columns, "key": key, "raw_table": raw.id, "rows": out,
            "unresolved": unresolved, "ambiguous": ambiguous}


# ---------------------------------------------------------------------------
# Queries: the one shape pgsink sends (jobs.query), nothing else

QUERY_KEYS = {"kind", "query", "maxResults", "defaultDataset", "timeoutMs", "dryRun",
              "preserveNulls", "useQueryCache", "useLegacySql", "parameterMode",
              "queryParameters", "location", "formatOptions", "connectionProperties", "labels",
              "maximumBytesBilled", "requestId", "createSession", "jobCreationMode"}
Q_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
Q_HEAD_RE = re.compile(r"SELECT (\d+) AS _pgsink_n")
Q_COLUMN_RE = re.compile(
    r", ARRAY_AGG\(IF\(_pgsink_op = 'delete' OR \"(" + Q_NAME + r")\" IN "
    r"UNNEST\(_pgsink_unchanged\), NULL, STRUCT\(`(" + Q_NAME + r")` AS v\)\) IGNORE NULLS "
    r"ORDER BY _pgsink_lsn DESC, _pgsink_sequence DESC LIMIT 1\) AS `(" + Q_NAME + r")`")
Q_FROM_RE = re.compile(r" FROM `([^`]+)` WHERE ")
Q_KEY_RE = re.compile(r"`(" + Q_NAME + r")` = @(" + Q_NAME + r") AND ")
Q_BOUND_RE = re.compile(r"\(_pgsink_lsn < @(" + Q_NAME + r") OR \(_pgsink_lsn = @(" + Q_NAME +
                        r") AND _pgsink_sequence < @(" + Q_NAME + r")\)\)")
QUERY_SHAPE = (
    "SELECT <n> AS _pgsink_n{, ARRAY_AGG(IF(_pgsink_op = 'delete' OR \"<c>\" IN "
    "UNNEST(_pgsink_unchanged), NULL, STRUCT(`<c>` AS v)) IGNORE NULLS ORDER BY _pgsink_lsn DESC, "
    "_pgsink_sequence DESC LIMIT 1) AS `<c>`} FROM `<project>.<dataset>.<raw table>` WHERE "
    "{`<key column>` = @<p> AND }(_pgsink_lsn < @<l> OR (_pgsink_lsn = @<l> AND "
    "_pgsink_sequence < @<s>)), parts joined by ' UNION ALL '")


def parse_lookup_query(sql):
    """pgsink's lookup query -> [{n, columns, ref, keys [(column, param)], lsn, seq}]; the fake
    runs no other SQL: anything else is refused (400 invalid), saying what it takes."""
    def refuse(why):
        raise ApiError(400, f"The fake runs one query shape only (pgsink's lookup of unchanged "
                            f"TOAST values): {QUERY_SHAPE}. {why}", "invalidQuery")
    if not isinstance(sql, str) or not sql:
        refuse("query is missing")
    out = []
    for part in sql.split(" UNION ALL "):
        m = Q_HEAD_RE.match(part)
        if not m:
            refuse(f"A part does not start with SELECT <n> AS _pgsink_n: {part[:80]!r}")
        n, pos, columns = int(m[1]), m.end(), []
        while True:
            m = Q_COLUMN_RE.match(part, pos)
            if not m:
                break
            if not m[1] == m[2] == m[3]:
                refuse(f"A column's three names differ: {m[0]!r}")
            columns.append(m[1])
            pos = m.end()
        m = Q_FROM_RE.match(part, pos)
        if not columns or not m:
            refuse(f"Expected a column or FROM at: {part[pos:pos + 80]!r}")
        ref, pos, keys = m[1], m.end(), []
        while True:
            m = Q_KEY_RE.match(part, pos)
            if not m:
                break
            keys.append((m[1], m[2]))
            pos = m.end()
        m = Q_BOUND_RE.fullmatch(part, pos)
        if not keys or not m or m[1] != m[2]:
            refuse(f"Expected the key's conditions, then the (lsn, sequence) bound, at: "
                   f"{part[pos:pos + 120]!r}")
        out.append({"n": n, "columns": columns, "ref": ref, "keys": keys, "lsn": m[1],
                    "seq": m[3]})
    if len({json.dumps(p["columns"]) for p in out}) != 1 or len({p["ref"] for p in out}) != 1:
        raise ApiError(400, "Queries in UNION ALL must have the same columns (and here: read the "
                            "same table)", "invalidQuery")
    if sorted(p["n"] for p in out) != list(range(len(out))):
        refuse("The parts' numbers must be 0, 1, 2 ...")
    return out


def rest_value(value, field, int64_ts, element=False):
    """A stored typed value as the REST API's rows give it (f/v: every scalar a string)."""
    if value is None:
        return None
    if field.get("mode") == "REPEATED" and not element:
        return [{"v": rest_value(x, field, int64_ts, True)} for x in value]
    t = TYPE_ALIASES[field["type"]]
    if t == "BOOL":
        return "true" if value else "false"
    if t == "INT64":
        return str(value)
    if t == "DATETIME":
        return value.replace(" ", "T")
    if t == "TIMESTAMP":
        d = parse_timestamp(value[:-3] + "Z")
        delta = d - EPOCH
        us = (delta.days * 86400 + delta.seconds) * 1000000 + delta.microseconds
        return str(us) if int64_ts else repr(us / 1e6).replace("e+", "E")
    if t == "RECORD":
        raise ApiError(400, "the fake's queries do not read RECORD columns")
    return value  # STRING, BYTES, NUMERIC, BIGNUMERIC, FLOAT64, DATE, TIME, JSON: their text


def lookup_query(project, body):
    """Run pgsink's lookup query (parse_lookup_query) -> (schema fields, rows of typed cells).
    Per part: one row: n, and per column [] when no earlier row sent a value (the raw table's
    rows of the key before (lsn, sequence), latest first, not a delete, the column not listed
    in _pgsink_unchanged), else [value]."""
    if body.get("useLegacySql") is not False:
        raise ApiError(400, "useLegacySql is absent or true: BigQuery then reads the query as "
                            "legacy SQL (its default); this fake speaks standard SQL only",
                       "invalidQuery")
    if body.get("dryRun"):
        raise ApiError(400, "the fake does not dry-run queries")
    parts = parse_lookup_query(body.get("query"))
    params = {}
    if parts and body.get("parameterMode") != "NAMED":
        raise ApiError(400, "Query parameters @name need parameterMode NAMED", "invalidQuery")
    for qp in body.get("queryParameters") or []:
        if not isinstance(qp, dict) or set(qp) - {"name", "parameterType", "parameterValue"}:
            raise ApiError(400, f"Invalid query parameter {qp!r}")
        name, ptype, pvalue = qp.get("name"), qp.get("parameterType"), qp.get("parameterValue")
        if not isinstance(name, str) or not re.fullmatch(Q_NAME, name) or name in params:
            raise ApiError(400, f"Invalid or duplicate query parameter name {name!r}")
        if not isinstance(ptype, dict) or set(ptype) != {"type"} or \
                ptype["type"] not in TYPE_ALIASES or TYPE_ALIASES[ptype["type"]] == "RECORD":
            raise ApiError(400, f"Query parameter {name}: parameterType must be a scalar "
                                f"{{\"type\": T}} (got {ptype!r})")
        if not isinstance(pvalue, dict) or set(pvalue) != {"value"} or \
                not isinstance(pvalue["value"], str):
            raise ApiError(400, f"Query parameter {name}: parameterValue must be "
                                f"{{\"value\": \"text\"}} (the fake takes no NULL here)")
        params[name] = (TYPE_ALIASES[ptype["type"]], pvalue["value"])
    ref = parts[0]["ref"].split(".")
    if len(ref) != 3 or ref[0] not in args.project:
        raise ApiError(400, f"Table `{parts[0]['ref']}` must be `project.dataset.table`",
                       "invalidQuery")
    ds = datasets.get((ref[0], ref[1]))
    if ds is None:
        raise ApiError(404, f"Not found: Dataset {ref[0]}:{ref[1]}")
    loc = body.get("location")
    if loc and loc.lower() != ds.location.lower():
        raise ApiError(404, f"Not found: Dataset {ref[0]}:{ref[1]} was not found in location "
                            f"{loc}")
    raw = ds.tables.get(ref[2])
    if raw is None:
        raise ApiError(404, f"Not found: Table {ref[0]}:{ref[1]}.{ref[2]} was not found in "
                            f"location {ds.location}")
    if raw.view is not None:
        raise ApiError(400, f"{ref[2]} is a view: the lookup reads the raw table", "invalidQuery")
    by = {f["name"].lower(): f for f in raw.fields}
    for c in ("_pgsink_lsn", "_pgsink_sequence", "_pgsink_op", "_pgsink_unchanged"):
        if c not in by:
            raise ApiError(400, f"Unrecognized name: {c}", "invalidQuery")

    def typed(pname, field):
        if pname not in params:
            raise ApiError(400, f"Query parameter '{pname}' not found", "invalidQuery")
        ptype, text = params[pname]
        if ptype != TYPE_ALIASES[field["type"]]:
            raise ApiError(400, f"No matching signature for operator = for argument types: "
                                f"{field['type']}, {ptype} (parameter {pname})", "invalidQuery")
        try:
            return check_value(text, {"name": field["name"], "type": field["type"]})
        except RowError as e:
            raise ApiError(400, f"Query parameter {pname}: {e.message}", "invalidQuery")

    columns = parts[0]["columns"]
    for c in columns:
        if c.lower() not in by or c.lower().startswith("_pgsink_"):
            raise ApiError(400, f"Unrecognized name: {c}", "invalidQuery")
    lsn_field = {"name": "_pgsink_lsn", "type": "INT64"}
    stored = stored_rows(raw)
    out = []
    for p in sorted(parts, key=lambda p: p["n"]):
        conds = []
        for col, pname in p["keys"]:
            f = by.get(col.lower())
            if f is None:
                raise ApiError(400, f"Unrecognized name: {col}", "invalidQuery")
            conds.append((f["name"], typed(pname, f)))
        bound = (typed(p["lsn"], lsn_field), typed(p["seq"], lsn_field))
        rows = [r for r in stored if all(r[c] == v for c, v in conds)
                and (r["_pgsink_lsn"], r["_pgsink_sequence"]) < bound]
        rows.sort(key=lambda r: (r["_pgsink_lsn"], r["_pgsink_sequence"]), reverse=True)
        cells = [p["n"]]
        for c in columns:
            f = by[c.lower()]
            cell = []
            for r in rows:
                if r["_pgsink_op"] == "delete" or \
                        c.lower() in (u.lower() for u in r["_pgsink_unchanged"]):
                    continue
                cell = [r[f["name"]]]
                break
            cells.append(cell)
        out.append(cells)
    fields = [{"name": "_pgsink_n", "type": "INTEGER", "mode": "NULLABLE"}]
    for c in columns:
        f = by[c.lower()]
        inner = {"name": "v", "type": TYPE_DISPLAY.get(TYPE_ALIASES[f["type"]],
                                                      TYPE_ALIASES[f["type"]]),
                 "mode": "REPEATED" if f.get("mode") == "REPEATED" else "NULLABLE"}
        fields.append({"name": c, "type": "RECORD", "mode": "REPEATED", "fields": [inner]})
    return fields, [by[c.lower()] for c in columns], out


def query_page(q, start, max_results, int64_ts):
    """The rows from start of a finished query, in f/v form, and the next page's token."""
    size = int(CONFIG["query_page_rows"])
    if max_results is not None:
        size = min(size, int(max_results))
    page = q["rows"][start:start + max(size, 1)]
    rows = []
    for cells in page:
        f = [{"v": str(cells[0])}]
        for field, cell in zip(q["columns"], cells[1:]):
            f.append({"v": [{"v": {"f": [{"v": rest_value(x, field, int64_ts)}]}}
                            for x in cell]})
        rows.append({"f": f})
    token = f"page{start + len(page)}" if start + len(page) < len(q["rows"]) else None
    return rows, token


# ---------------------------------------------------------------------------
# Avro loads

AVRO_MAP = {"boolean": "BOOL", "int": "INT64", "long": "INT64", "float": "FLOAT64",
            "double": "FLOAT64", "bytes": "BYTES", "string": "STRING", "fixed": "BYTES",
            "enum": "STRING", "record": "RECORD"}


def avro_column(ftype, logical, name, path):
    """Avro field type (JSON) -> (bigquery type, mode, nested fields or None, converter)."""
    mode = "REQUIRED"
    if isinstance(ftype, list):
        # ("null" or {"type": "null"}: avro-c writes the long form)
        branches = [b for b in ftype if b != "null" and b != {"type": "null"}]
        if len(branches) != 1 or len(ftype) != 2:
            raise ValueError(f"field {path}: union {json.dumps(ftype)} is not [\"null\", T]: "
                             "BigQuery loads only nullable unions")
        mode = "NULLABLE"
        ftype = branches[0]
    if isinstance(ftype, dict) and ftype.get("type") == "array":
        items = ftype.get("items")
        if isinstance(items, list):
            raise ValueError(f"field {path}: array items are a union; BigQuery arrays cannot "
                             "hold NULL elements")
        if mode == "NULLABLE":
            raise ValueError(f"field {path}: a nullable array; BigQuery REPEATED fields are "
                             "never NULL (write an empty array)")
        t, _, sub, conv = avro_column(items, logical, name, path)
        return t, "REPEATED", sub, conv
    if isinstance(ftype, dict) and ftype.get("type") == "map":
        raise ValueError(f"field {path}: Avro maps are not supported by this fake")
    base = ftype.get("type") if isinstance(ftype, dict) else ftype
    if isinstance(base, (dict, list)):
        return avro_column(base, logical, name, path) if mode == "REQUIRED" else \
            avro_column(["null", base], logical, name, path)
    if base not in AVRO_MAP:
        raise ValueError(f"field {path}: Avro type {json.dumps(base)} is unknown")
    lt = ftype.get("logicalType") if isinstance(ftype, dict) else None
    sql = ftype.get("sqlType") if isinstance(ftype, dict) else None
    t = AVRO_MAP[base]
    sub = None
    if base == "record":
        sub = avro_record_fields(ftype, logical, path + ".")
    if lt == "decimal" and base in ("bytes", "fixed"):
        p, s = ftype.get("precision"), ftype.get("scale", 0)
        if not isinstance(p, int) or not isinstance(s, int) or p < 1 or s < 0 or s > p:
            raise ValueError(f"field {path}: decimal with bad precision/scale {p}/{s}")
        if s <= 9 and p - s <= 29:
            t = "NUMERIC"
        elif s <= 38 and p - s <= 38:
            t = "BIGNUMERIC"
        else:
            raise ValueError(f"field {path}: decimal({p},{s}) fits neither NUMERIC nor "
                             "BIGNUMERIC")
    elif base == "string" and sql == "JSON":
        t = "JSON"
    elif logical and lt:
        t = {("int", "date"): "DATE", ("int", "time-millis"): "TIME",
             ("long", "time-micros"): "TIME", ("long", "timestamp-millis"): "TIMESTAMP",
             ("long", "timestamp-micros"): "TIMESTAMP",
             ("long", "local-timestamp-millis"): "DATETIME",
             ("long", "local-timestamp-micros"): "DATETIME",
             ("string", "datetime"): "DATETIME"}.get((base, lt), t)
    return t, mode, sub, (base, lt)


def avro_record_fields(schema, logical, prefix=""):
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise ValueError("the Avro schema is not a record")
    out = []
    for f in schema.get("fields", []):
        if not isinstance(f.get("name"), str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$",
                                                                f["name"]):
            raise ValueError(f"Avro field name {f.get('name')!r} is not [A-Za-z_][A-Za-z0-9_]*")
        t, mode, sub, conv = avro_column(f["type"], logical, f["name"], prefix + f["name"])
        out.append({"name": f["name"], "type": t, "mode": mode, "fields": sub, "conv": conv})
    return out


def match_avro(avro_fields, table_fields, ref, add, relax, prefix="", relaxed=None):
    """Check Avro fields against the table; returns the fields to add (or []);
    the names of top-level REQUIRED columns to relax go into relaxed."""
    msg = f"Provided Schema does not match Table {ref}."
    by = {f["name"].lower(): f for f in table_fields}
    relaxed = [] if relaxed is None else relaxed
    added = []
    for a in avro_fields:
        c = by.get(a["name"].lower())
        if c is None:
            if not add:
                raise ValueError(f"{msg} Cannot add fields (field: {prefix}{a['name']})")
            added.append(a)
            continue
        ct = TYPE_ALIASES[c["type"]]
        if a["type"] != ct and not (a["type"] == "NUMERIC" and ct == "BIGNUMERIC"):
            raise ValueError(f"{msg} Field {prefix}{c['name']} has changed type from "
                             f"{type_name(c)} to "
                             f"{TYPE_DISPLAY.get(a['type'], a['type'])}")
        cm = c.get("mode", "NULLABLE")
        if cm == "REPEATED" and a["mode"] != "REPEATED" or \
                a["mode"] == "REPEATED" and cm != "REPEATED":
            raise ValueError(f"{msg} Field {prefix}{c['name']} has changed mode from {cm} to "
                             f"{a['mode']}")
        if cm == "REQUIRED" and a["mode"] == "NULLABLE":
            if not relax or prefix:
                raise ValueError(f"{msg} Field {prefix}{c['name']} has changed mode from "
                                 "REQUIRED to NULLABLE")
            relaxed.append(c["name"])
        if ct == "RECORD":
            match_avro(a["fields"], c["fields"], ref, False, False, prefix + c["name"] + ".")
    names = {a["name"].lower() for a in avro_fields}
    for c in table_fields:
        if c.get("mode") == "REQUIRED" and c["name"].lower() not in names:
            if not relax or prefix:
                raise ValueError(f"{msg} Field {prefix}{c['name']} is missing in the file, and "
                                 "it is REQUIRED")
            relaxed.append(c["name"])
    return added


def avro_value(v, a, col):
    """A decoded Avro value -> the JSON form check_field takes (then typed)."""
    if v is None:
        return None
    if a["mode"] == "REPEATED":
        return [avro_value(x, dict(a, mode="REQUIRED"), col) for x in v]
    if a["type"] == "RECORD":
        sub = {f["name"]: f for f in a["fields"]}
        return {k: avro_value(x, sub[k], col) for k, x in v.items() if k in sub}
    base, lt = a["conv"]
    t = a["type"]
    if t == "INT64" and isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        # python3-avro applies logical types the load does not: back to the raw number.
        per = 1000 if lt in ("timestamp-millis", "time-millis") else 1000000
        if isinstance(v, datetime.datetime):
            d = v - EPOCH
            return (d.days * 86400 + d.seconds) * per + d.microseconds * per // 1000000
        if isinstance(v, datetime.date):
            return (v - datetime.date(1970, 1, 1)).days
        return ((v.hour * 60 + v.minute) * 60 + v.second) * per + v.microsecond * per // 1000000
    if isinstance(v, bytes) and t == "BYTES":
        return base64.b64encode(v).decode()
    if isinstance(v, decimal.Decimal):
        return "{:f}".format(v)
    if isinstance(v, datetime.datetime):
        if t == "TIMESTAMP":
            return v.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ") \
                if v.year >= 1000 else fmt_datetime(v.astimezone(datetime.timezone.utc)) + "Z"
        return fmt_datetime(v)
    if isinstance(v, datetime.date):
        return fmt_date(v)
    if isinstance(v, datetime.time):
        return fmt_time(v)
    if lt in ("timestamp-micros", "timestamp-millis") and t == "TIMESTAMP":
        us = v if lt == "timestamp-micros" else v * 1000
        return fmt_datetime(EPOCH + datetime.timedelta(microseconds=us)) + "Z"
    if lt in ("local-timestamp-micros", "local-timestamp-millis") and t == "DATETIME":
        us = v if lt == "local-timestamp-micros" else v * 1000
        return fmt_datetime(datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=us))
    if t == "FLOAT64" and isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
    return v


def avro_container(data):
    """(metadata, [(count, block bytes uncompressed or None)], codec) of an Avro
    object container file, its framing checked (magic, sync markers, sizes,
    deflate streams); ValueError if broken."""
    pos = 0

    def read_long():
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= len(data):
                raise ValueError("truncated")
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return (result >> 1) ^ -(result & 1)

    def read_bytes():
        nonlocal pos
        n = read_long()
        if n < 0 or pos + n > len(data):
            raise ValueError("truncated")
        pos += n
        return data[pos - n:pos]
    if data[:4] != b"Obj\x01":
        raise ValueError("not an Avro object container file (no Obj\\x01 magic)")
    pos = 4
    meta = {}
    while True:
        n = read_long()
        if n == 0:
            break
        if n < 0:
            n = -n
            read_long()
        for _ in range(n):
            k = read_bytes().decode("utf-8")
            meta[k] = read_bytes()
    sync = data[pos:pos + 16]
    pos += 16
    if len(sync) != 16:
        raise ValueError("truncated header")
    codec = meta.get("avro.codec", b"null").decode()
    if codec not in ("null", "deflate"):
        raise ValueError(f"Avro codec {codec}: the fake reads null and deflate")
    blocks = []
    while pos < len(data):
        count = read_long()
        block = read_bytes()
        if data[pos:pos + 16] != sync:
            raise ValueError("a block does not end with the file's sync marker")
        pos += 16
        if count < 0:
            raise ValueError("a negative block count")
        if codec == "deflate":
            try:
                zlib.decompress(block, -15)
            except zlib.error as e:
                raise ValueError(f"a deflate block does not inflate: {e}")
        blocks.append(count)
    return meta, blocks, codec


def quiet_avro():
    """python3-avro warns about logical types it does not know (BigQuery's
    "datetime" string): the fake maps those itself."""
    import warnings
    import avro.errors
    warnings.simplefilter("ignore", avro.errors.IgnoredLogicalType)


def strict_avro_decimals():
    """python3-avro reads a decimal under a context of the schema's precision:
    a value with more digits is silently rounded. BigQuery refuses it; so
    does the fake (and an empty bytes value, which holds no number)."""
    import avro.io
    plain = avro.io.BinaryDecoder.read_decimal_from_fixed

    def read_decimal_from_fixed(self, precision, scale, size):
        if size < 1:
            raise ValueError("a decimal value of 0 bytes")
        start = self.reader.tell()
        raw = self.reader.read(size)
        self.reader.seek(start)
        unscaled = int.from_bytes(raw, "big", signed=True)
        if len(str(abs(unscaled))) > precision:
            raise ValueError(f"decimal value {unscaled}E-{scale} has more than {precision} "
                             f"digits (its schema's precision)")
        return plain(self, precision, scale, size)
    avro.io.BinaryDecoder.read_decimal_from_fixed = read_decimal_from_fixed


def run_load(data, ref, fields, conf):
    """Decode and check a load's data against fields: (typed rows as JSON
    texts, or None when only counted; the table's fields after the load
    (added, relaxed); row count). ValueError says what is wrong."""
    fmt = conf.get("sourceFormat", "CSV")
    add = "ALLOW_FIELD_ADDITION" in (conf.get("schemaUpdateOptions") or [])
    relax = "ALLOW_FIELD_RELAXATION" in (conf.get("schemaUpdateOptions") or [])
    ignore = bool(conf.get("ignoreUnknownValues"))
    out = []
    if fmt == "NEWLINE_DELIMITED_JSON":
        bad_rows = 0
        for n, line in enumerate(data.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
                out.append(json.dumps(check_row(row, fields, ignore), separators=(",", ":"),
                                      ensure_ascii=False))
            except (ValueError, UnicodeDecodeError, RowError) as e:
                bad_rows += 1
                if bad_rows > int(conf.get("maxBadRecords", 0)):
                    where = f" Field: {e.location};" if isinstance(e, RowError) else ""
                    raise ValueError(f"Error while reading data, error message: JSON table "
                                     f"encountered too many errors, giving up. Rows: {n};"
                                     f"{where} {getattr(e, 'message', str(e))}")
        return out, fields, len(out)
    try:
        meta, blocks, _ = avro_container(data)
        schema = json.loads(meta["avro.schema"].decode("utf-8"))
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        raise ValueError(f"Error while reading data, error message: The Apache Avro library "
                         f"failed to parse the header with the following error: {e}")
    avro_fields = avro_record_fields(schema, bool(conf.get("useAvroLogicalTypes")))
    relaxed = []
    added = match_avro(avro_fields, fields, ref, add, relax, relaxed=relaxed)
    fields = [dict(f, mode="NULLABLE") if f["name"] in relaxed else f for f in fields] + [
        {"name": a["name"], "type": a["type"],
         "mode": "NULLABLE" if a["mode"] == "REQUIRED" else a["mode"]} for a in added]
    if CONFIG["load_check"] == "schema":
        return None, fields, sum(blocks)
    import avro.datafile
    import avro.io
    by = {a["name"]: a for a in avro_fields}
    n = 0
    try:
        reader = avro.datafile.DataFileReader(io.BytesIO(data), avro.io.DatumReader())
        for n, datum in enumerate(reader, 1):
            row = {k: avro_value(v, by[k], k) for k, v in datum.items()}
            out.append(json.dumps(check_row(row, fields, False), separators=(",", ":"),
                                  ensure_ascii=False))
        reader.close()
    except RowError as e:
        raise ValueError(f"Error while reading data, error message: row {n + 1}, field "
                         f"{e.location}: {e.message}")
    except Exception as e:  # noqa: BLE001 - avro raises many kinds
        raise ValueError(f"Error while reading data, error message: The Apache Avro library "
                         f"failed to read data with the following error: {type(e).__name__}: "
                         f"{e} (row {n + 1})")
    if len(out) != sum(blocks):
        raise ValueError(f"the blocks announce {sum(blocks)} rows, {len(out)} were read")
    return out, fields, len(out)


def finish_job(job):
    """PENDING -> RUNNING -> DONE, on a thread of its own; the data is
    decoded outside the lock, the rows appended under it."""
    total = float(CONFIG["job_seconds"])
    time.sleep(total / 3)
    with lock:
        job.state = "RUNNING"
        job.started = time.time()
    time.sleep(total * 2 / 3)
    fault = take_rule("load", ("job_error",))
    conf = job.resource["configuration"]["load"]
    dest = conf["destinationTable"]
    try:
        if fault:
            raise ApiError(500, fault.get("message", "The job encountered an internal error "
                                                     "during execution."),
                           fault.get("reason", "backendError"))
        with lock:
            ds = datasets.get((dest["projectId"], dest["datasetId"]))
            if ds is None:
                raise ApiError(404, f"Not found: Dataset {dest['projectId']}:{dest['datasetId']}")
            table = ds.tables.get(dest["tableId"])
            if table is None:
                if conf.get("createDisposition") == "CREATE_NEVER" or "schema" not in conf:
                    raise ApiError(404, f"Not found: Table {dest['projectId']}:"
                                        f"{dest['datasetId']}.{dest['tableId']}"
                                   + ("" if conf.get("createDisposition") == "CREATE_NEVER" else
                                      " (the fake creates a table for a load only from "
                                      "configuration.load.schema)"))
                table = Table(ds, dest["tableId"])
                table.fields = check_fields(conf["schema"].get("fields", []))
                ds.tables[table.id] = table
            if table.view is not None:
                raise ApiError(400, f"Cannot load into a view: {table.ref()}")
            if conf.get("writeDisposition") == "WRITE_EMPTY" and table.row_count:
                raise ApiError(409, f"Already Exists: Table {table.ref()}", "duplicate")
            fields = list(table.fields)
        rows, schema_after, count = run_load(job.data, table.ref(), fields, conf)
        with lock:
            if ds.tables.get(dest["tableId"]) is not table or table.fields != fields:
                raise ApiError(500, "The table changed while the job ran; run it again",
                               "backendError")
            if schema_after != fields:  # fields added, REQUIRED relaxed
                table.fields = schema_after
                table.version += 1
            if conf.get("writeDisposition") == "WRITE_TRUNCATE":
                table.rows = []
                table.row_count = table.streamed = 0
            if CONFIG["store_rows"] and rows is not None:
                table.rows.extend(rows)
            table.row_count += count
            stats["rows_stored"] += count
            stats["rows_loaded"] += count
            job.output_rows = count
    except ApiError as e:
        job.error = {"reason": e.reason, "message": e.message}
    except (ValueError, RowError) as e:
        job.error = {"reason": "invalid", "message": getattr(e, "message", str(e))}
    except Exception as e:  # noqa: BLE001 - a bug of the fake: the job says so
        import traceback
        traceback.print_exc()
        job.error = {"reason": "internalError",
                     "message": f"bug in bigquery_fake.py: {type(e).__name__}: {e}"}
    with lock:
        job.state = "DONE"
        job.ended = time.time()
        job.data = None


# ---------------------------------------------------------------------------
# HTTP

def json_bytes(obj):
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ESF"
    sys_version = ""

    def setup(self):
        super().setup()
        # Answers go out whole, at once: no Nagle wait on a small last segment.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with lock:
            connections.add(self.connection)

    def finish(self):
        with lock:
            connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass  # closed by an outage

    def log_message(self, fmt, *a):
        if args.log:
            with open(args.log, "a", encoding="utf-8") as f:
                f.write("%s %s\n" % (time.strftime("%H:%M:%S"), fmt % a))

    # -- plumbing
    def read_body(self):
        """The request's body (read once; gzip undone)."""
        if self.body is None:
            self.body = b""  # consumed from the connection, whatever happens next
            raw = self.read_raw_body()
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                try:
                    raw = gzip.decompress(raw)
                except (OSError, EOFError, zlib.error):
                    raise ApiError(400, "Content-Encoding gzip, but the body is not gzip")
            self.body = raw
        return self.body

    def read_raw_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(chunks)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return body

    def send(self, status, body=b"", ctype="application/json; charset=UTF-8", headers=()):
        self.status = status
        self.send_response(status)
        if body or status not in (204, 308):
            self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        # end_headers() would write the headers alone; one write for all.
        self._headers_buffer.append(b"\r\n")
        self.wfile.write(b"".join(self._headers_buffer) + body)
        self._headers_buffer = []

    def send_json(self, status, obj, headers=()):
        self.send(status, json_bytes(obj), headers=headers)

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method):
        global concurrent
        self.status = 0
        self.kind = "unknown"
        self.log_extra = {}
        self.body = None
        if time.time() < outage["until"]:
            return self.drop()  # down
        url = urllib.parse.urlsplit(self.path)
        self.url_path = url.path
        try:
            self.query = urllib.parse.parse_qs(url.query, keep_blank_values=True,
                                               strict_parsing=bool(url.query))
        except ValueError:
            self.query = {}
        if url.path.startswith("/_fake/"):
            try:
                return self.control(method, url.path[len("/_fake/"):])
            except ApiError as e:
                return self.send_json(e.code, e.body())
            except Exception as e:  # noqa: BLE001 - a bug of the fake: say so, loudly
                import traceback
                traceback.print_exc()
                return self.send_json(500, ApiError(500, f"bug in bigquery_fake.py: "
                                                         f"{type(e).__name__}: {e}",
                                                    "internalError").body())
        with lock:
            concurrent += 1
            stats["max_concurrent"] = max(stats["max_concurrent"], concurrent)
        try:
            self.route(method, url.path)
        except Exception as e:  # noqa: BLE001 - a bug of the fake: say so, loudly
            import traceback
            traceback.print_exc()
            if not self.status:
                self.send_json(500, ApiError(500, f"bug in bigquery_fake.py: "
                                                  f"{type(e).__name__}: {e}",
                                             "internalError").body())
        finally:
            if self.body is None and not self.close_connection:
                self.read_body_quietly()
            with lock:
                concurrent -= 1
                entry = {"n": len(request_log) + 1, "kind": self.kind, "method": method,
                         "path": url.path, "status": self.status}
                entry.update(self.log_extra)
                request_log.append(entry)
                per = stats["requests"].setdefault(self.kind, {})
                per[str(self.status)] = per.get(str(self.status), 0) + 1

    def route(self, method, path):
        token_path = urllib.parse.urlsplit(args.token_uri).path
        if path == token_path:
            self.kind = "token"
            return self.with_faults(method, self.token)
        m = re.match(r"^/upload/bigquery/v2/projects/([^/]+)/jobs$", path)
        if m:
            self.kind = "upload" if method == "PUT" else "jobs.insert"
            return self.with_faults(method, lambda: self.upload(method, m[1]))
        m = re.match(r"^/bigquery/v2/projects/([^/]+)(/.*)?$", path)
        if not m:
            self.kind = "unknown"
            return self.send(404, b"Not Found", "text/html; charset=UTF-8")
        project, rest = m[1], m[2] or ""
        routes = [
            (r"^/datasets$", {"POST": "datasets.insert", "GET": "datasets.list"}),
            (r"^/datasets/([^/]+)$", {"GET": "datasets.get", "DELETE": "datasets.delete"}),
            (r"^/datasets/([^/]+)/tables$", {"POST": "tables.insert", "GET": "tables.list"}),
            (r"^/datasets/([^/]+)/tables/([^/]+)$",
             {"GET": "tables.get", "PATCH": "tables.patch", "PUT": "tables.update",
              "DELETE": "tables.delete"}),
            (r"^/datasets/([^/]+)/tables/([^/]+)/insertAll$", {"POST": "insertAll"}),
            (r"^/jobs$", {"POST": "jobs.insert"}),
            (r"^/jobs/([^/]+)$", {"GET": "jobs.get"}),
            (r"^/queries$", {"POST": "jobs.query"}),
            (r"^/queries/([^/]+)$", {"GET": "jobs.getQueryResults"}),
        ]
        for pattern, methods in routes:
            mm = re.match(pattern, rest)
            if mm:
                if method not in methods:
                    self.kind = "unknown"
                    return self.send_json(405, ApiError(
                        405, f"Method {method} not allowed on {path}", "badRequest").body())
                self.kind = methods[method]
                parts = [urllib.parse.unquote(g) for g in mm.groups()]
                handler = getattr(self, self.kind.replace(".", "_"))
                return self.with_faults(method, lambda: self.api(project, handler, parts))
        self.kind = "unknown"
        return self.send(404, b"Not Found", "text/html; charset=UTF-8")

    def with_faults(self, method, serve):
        rule = take_rule(self.kind, ("slow",))
        if rule:
            time.sleep(float(rule.get("seconds", 1)))
        rule = take_rule(self.kind, ("status", "reset", "token_error"))
        if rule:
            self.read_body_quietly()
            if rule["kind"] == "reset":
                return self.drop()
            if rule["kind"] == "token_error":
                return self.send_json(int(rule.get("status", 400)),
                                      {"error": rule.get("error", "invalid_grant"),
                                       "error_description": rule.get(
                                           "message", "injected token endpoint failure")})
            status = int(rule.get("status", 503))
            headers = [("Retry-After", str(rule["retry_after"]))] if "retry_after" in rule else []
            if rule.get("body", True) is False:
                return self.send(status, b"", "text/html; charset=UTF-8", headers)
            reason = rule.get("reason") or DEFAULT_REASONS.get(status, "invalid")
            e = ApiError(status, rule.get("message", {
                "rateLimitExceeded": "Exceeded rate limits: too many api requests per user per "
                                     "method for this user_method. For more information, see "
                                     "https://cloud.google.com/bigquery/docs/troubleshoot-quotas",
                "quotaExceeded": "Quota exceeded: Your table exceeded quota for imports or query "
                                 "appends per table. For more information, see "
                                 "https://cloud.google.com/bigquery/docs/troubleshoot-quotas",
                "backendError": "Error encountered during execution. Retrying may solve the "
                                "problem." if status != 503 else
                                "The service is currently unavailable.",
                "internalError": "An internal error occurred and the request could not be "
                                 "completed."}.get(reason, "Injected error")), reason)
            return self.send_json(status, e.body(), headers)
        drop = take_rule(self.kind, ("apply_then_drop",))
        if drop:
            self.wfile = io.BytesIO()  # the answer goes nowhere
            serve()
            self.status = 0
            return self.drop()
        return serve()

    def read_body_quietly(self):
        try:
            self.read_body()
        except Exception:  # noqa: BLE001 - the answer is the fault anyway
            pass

    def drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def check_params(self, allowed):
        for k in self.query:
            if k not in STANDARD_PARAMS and k not in allowed:
                raise ApiError(400, f'Invalid JSON payload received. Unknown name "{k}": Cannot '
                                    "bind query parameter. Field '" + k + "' could not be found "
                                    "in request message.")
        if self.query.get("alt", ["json"])[0] != "json":
            raise ApiError(400, "alt must be json")

    def param(self, name, default=None):
        return self.query.get(name, [default])[0]

    def json_body(self, allowed, what):
        body = self.read_body()
        ctype = self.headers.get("Content-Type", "")
        if not ctype.split(";")[0].strip().lower() == "application/json":
            raise ApiError(400, f"Content-Type must be application/json (got {ctype!r})")
        try:
            obj = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ApiError(400, f"Invalid JSON payload received. {e}", "parseError")
        if not isinstance(obj, dict):
            raise ApiError(400, "Invalid JSON payload received. Expected an object.", "parseError")
        unknown = set(obj) - allowed
        if unknown:
            raise ApiError(400, f'Invalid JSON payload received. Unknown name '
                                f'"{sorted(unknown)[0]}" at \'{what}\': Cannot find field.')
        return obj, len(body)

    def authenticate(self, insert_only_ok=False):
        auth = self.headers.get("Authorization")
        www = ('Bearer realm="https://accounts.google.com/", error="invalid_token"',)
        if not auth:
            stats["auth_refusals"] += 1
            raise ApiError(401, "Request is missing required authentication credential. Expected "
                                "OAuth 2 access token, login cookie or other valid authentication "
                                "credential. See https://developers.google.com/identity/sign-in/"
                                "web/devconsole-project.", "required", "Authorization", "header",
                           [("WWW-Authenticate", www[0])])
        parts = auth.split(" ", 1)
        with lock:
            t = tokens.get(parts[1]) if len(parts) == 2 and parts[0] == "Bearer" else None
            if t is None or t["expires"] <= time.time():
                stats["auth_refusals"] += 1
                raise ApiError(401, "Request had invalid authentication credentials. Expected "
                                    "OAuth 2 access token, login cookie or other valid "
                                    "authentication credential. See https://developers.google."
                                    "com/identity/sign-in/web/devconsole-project.", "authError",
                               "Authorization", "header", [("WWW-Authenticate", www[0])])
            if not (t["scopes"] & set(SCOPE_ALL)) and not (
                    insert_only_ok and SCOPE_INSERT in t["scopes"]):
                raise ApiError(403, "Request had insufficient authentication scopes.",
                               "insufficientPermissions")
            return t

    def api(self, project, handler, parts):
        try:
            self.authenticate(insert_only_ok=(self.kind == "insertAll"))
            if project not in args.project:
                raise ApiError(404, f"Not found: Project {project}")
            status, obj, headers = handler(project, *parts)
            if status == 204:
                return self.send(204, b"")
            return self.send_json(status, obj, headers)
        except ApiError as e:
            self.read_body_quietly()
            return self.send_json(e.code, e.body(), e.headers)

    # -- token endpoint
    def token(self):
        try:
            body = self.read_body()
            ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype != "application/x-www-form-urlencoded":
                raise OAuthError("invalid_request", "Content-Type must be "
                                                    "application/x-www-form-urlencoded")
            try:
                form = urllib.parse.parse_qs(body.decode("ascii"), strict_parsing=True)
            except (ValueError, UnicodeDecodeError):
                raise OAuthError("invalid_request", "the body is not a valid form")
            if any(len(v) != 1 for v in form.values()):
                raise OAuthError("invalid_request", "a parameter is repeated")
            grant = form.get("grant_type", [None])[0]
            if grant is None:
                raise OAuthError("invalid_request", "Missing required parameter: grant_type")
            if grant != GRANT_TYPE:
                raise OAuthError("unsupported_grant_type", f"Invalid grant_type: {grant}")
            assertion = form.get("assertion", [None])[0]
            if assertion is None:
                raise OAuthError("invalid_request", "Missing required parameter: assertion")
            token, lifetime = self.verify_jwt(assertion)
            stats["tokens_issued"] += 1
            return self.send(200, json_bytes({"access_token": token, "expires_in": lifetime,
                                              "token_type": "Bearer"}),
                             "application/json; charset=utf-8",
                             [("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate"),
                              ("Pragma", "no-cache")])
        except OAuthError as e:
            stats["token_refusals"] += 1
            return self.send(e.status, json_bytes({"error": e.error,
                                                   "error_description": e.description}),
                             "application/json; charset=utf-8")

    def verify_jwt(self, assertion):
        segs = assertion.split(".")
        if len(segs) != 3 or not all(re.match(r"^[A-Za-z0-9_-]+$", s) for s in segs):
            raise OAuthError("invalid_request", "Invalid JWT: not three base64url segments "
                                                "(unpadded)")

        def b64(s):
            return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
        try:
            header = json.loads(b64(segs[0]))
            claims = json.loads(b64(segs[1]))
            sig = b64(segs[2])
        except (ValueError, UnicodeDecodeError):
            raise OAuthError("invalid_request", "Invalid JWT: the header or the claims are not "
                                                "JSON")
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise OAuthError("invalid_request", "Invalid JWT: header and claims must be objects")
        acct = accounts.get(claims.get("iss"))
        if acct is None:
            raise OAuthError("invalid_grant", "Invalid grant: account not found")
        if header.get("alg") != "RS256" or header.get("typ", "JWT") != "JWT":
            raise OAuthError("invalid_grant", "Invalid JWT Signature.")
        if "kid" in header and acct["kid"] is not None and header["kid"] != acct["kid"]:
            raise OAuthError("invalid_grant", "Invalid JWT Signature.")
        try:
            acct["key"].verify(sig, (segs[0] + "." + segs[1]).encode("ascii"),
                               padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise OAuthError("invalid_grant", "Invalid JWT Signature.")
        if claims.get("aud") != args.token_uri:
            raise OAuthError("invalid_grant", "Invalid JWT: Failed audience check. The right "
                                              f"audience is {args.token_uri}")
        iat, exp = claims.get("iat"), claims.get("exp")
        now, skew = time.time(), float(CONFIG["clock_skew"])
        timeframe = ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                     "reasonable timeframe. Check your iat and exp values in the JWT claim.")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (iat, exp)):
            raise OAuthError("invalid_grant", timeframe)
        if exp <= iat or exp - iat > 3600 or iat > now + skew or exp < now - skew:
            raise OAuthError("invalid_grant", timeframe)
        if "sub" in claims and claims["sub"] != claims["iss"]:
            raise OAuthError("unauthorized_client", "Client is unauthorized to retrieve access "
                                                    "tokens using this method, or client not "
                                                    "authorized for any of the scopes requested.",
                             401)
        scope = claims.get("scope")
        if not isinstance(scope, str) or not scope.strip():
            raise OAuthError("invalid_scope", "Invalid OAuth scope or ID token audience "
                                              "provided.")
        lifetime = int(CONFIG["token_lifetime"])
        token = "ya29.fake" + secrets.token_urlsafe(48)
        with lock:
            tokens[token] = {"expires": time.time() + lifetime, "scopes": set(scope.split()),
                             "email": claims["iss"]}
        return token, lifetime

    # -- datasets
    def dataset(self, project, dataset_id):
        ds = datasets.get((project, dataset_id))
        if ds is None:
            raise ApiError(404, f"Not found: Dataset {project}:{dataset_id}")
        return ds

    def datasets_insert(self, project):
        self.check_params(set())
        obj, _ = self.json_body(DATASET_KEYS, "dataset")
        ref = obj.get("datasetReference")
        if not isinstance(ref, dict) or not ref.get("datasetId"):
            raise ApiError(400, "Required parameter is missing: datasetReference.datasetId")
        if ref.get("projectId", project) != project:
            raise ApiError(400, f"Invalid project ID '{ref.get('projectId')}': it must be the "
                                f"project of the path ({project})")
        if "labels" in obj:
            check_labels(obj["labels"])
        if not ID_RE.match(ref["datasetId"]):
            raise ApiError(400, f"Invalid dataset ID \"{ref['datasetId']}\". Dataset IDs must be "
                                "alphanumeric (plus underscores) and must be at most 1024 "
                                "characters long.")
        with lock:
            if (project, ref["datasetId"]) in datasets:
                raise ApiError(409, f"Already Exists: Dataset {project}:{ref['datasetId']}",
                               "duplicate")
            ds = Dataset(project, ref["datasetId"], obj)
            datasets[(project, ds.id)] = ds
            return 200, ds.to_json(), ()

    def datasets_get(self, project, dataset_id):
        self.check_params({"datasetView", "accessPolicyVersion"})
        with lock:
            return 200, self.dataset(project, dataset_id).to_json(), ()

    def datasets_list(self, project):
        self.check_params({"all", "filter", "maxResults", "pageToken"})
        with lock:
            items = [{"kind": "bigquery#dataset", "id": f"{p}:{d}",
                      "datasetReference": {"projectId": p, "datasetId": d},
                      "location": ds.location}
                     for (p, d), ds in datasets.items() if p == project]
        return 200, {"kind": "bigquery#datasetList", "etag": "x", "datasets": items}, ()

    def datasets_delete(self, project, dataset_id):
        self.check_params({"deleteContents"})
        with lock:
            ds = self.dataset(project, dataset_id)
            if ds.tables and self.param("deleteContents") != "true":
                raise ApiError(400, f"Dataset {project}:{dataset_id} is still in use",
                               "resourceInUse")
            del datasets[(project, ds.id)]
        return 204, None, ()

    # -- tables
    def table(self, project, dataset_id, table_id):
        ds = self.dataset(project, dataset_id)
        t = ds.tables.get(table_id)
        if t is None:
            raise ApiError(404, f"Not found: Table {project}:{dataset_id}.{table_id}")
        return t

    def table_settings(self, t, obj, project, creating):
        if "schema" in obj:
            if not isinstance(obj["schema"], dict) or set(obj["schema"]) - {"fields"}:
                raise ApiError(400, "Invalid schema: only {\"fields\": [...]} is known")
        if "view" in obj:
            if not creating and t.view is None:
                raise ApiError(400, f"Cannot change a table into a view: {t.ref()}")
            check_view(obj["view"], project)
            if "schema" in obj and creating:
                raise ApiError(400, "A view has no schema of its own: leave schema out")
        for k in ("description", "friendlyName", "labels", "expirationTime",
                  "requirePartitionFilter"):
            if k in obj:
                t.extra[k] = obj[k]
        if "timePartitioning" in obj:
            tp = obj["timePartitioning"]
            if not creating and tp != t.time_partitioning:
                raise ApiError(400, f"Cannot change partitioning spec for {t.ref()}")
        if "labels" in obj:
            check_labels(obj["labels"])

    def check_partitioning(self, t, tp):
        if not isinstance(tp, dict) or set(tp) - {"type", "field", "expirationMs",
                                                  "requirePartitionFilter"}:
            raise ApiError(400, "Invalid timePartitioning: keys type, field, expirationMs")
        if tp.get("type") not in ("DAY", "HOUR", "MONTH", "YEAR"):
            raise ApiError(400, f"Invalid timePartitioning.type {tp.get('type')!r}: DAY, HOUR, "
                                "MONTH or YEAR")
        if "field" in tp:
            f = next((f for f in t.fields if f["name"].lower() == str(tp["field"]).lower()), None)
            if f is None:
                raise ApiError(400, f"The field specified for time partitioning can only be "
                                    f"found in the table's schema: {tp['field']} is not there")
            if TYPE_ALIASES[f["type"]] not in ("DATE", "TIMESTAMP", "DATETIME") or \
                    f.get("mode") == "REPEATED":
                raise ApiError(400, f"The field specified for time partitioning can only be of "
                                    f"type TIMESTAMP, DATE or DATETIME. The type found is: "
                                    f"{f['type']}.")

    def tables_insert(self, project, dataset_id):
        self.check_params(set())
        obj, _ = self.json_body(TABLE_KEYS, "table")
        ref = obj.get("tableReference")
        if not isinstance(ref, dict) or not ref.get("tableId"):
            raise ApiError(400, "Required parameter is missing: tableReference.tableId")
        if ref.get("projectId", project) != project or ref.get("datasetId",
                                                               dataset_id) != dataset_id:
            raise ApiError(400, "tableReference.projectId/datasetId must match the path")
        if not ID_RE.match(ref["tableId"]):
            raise ApiError(400, f"Invalid table ID \"{ref['tableId']}\". Table IDs must be "
                                "alphanumeric (plus underscores) and must be at most 1024 "
                                "characters long.")
        with lock:
            ds = self.dataset(project, dataset_id)
            if ref["tableId"] in ds.tables:
                raise ApiError(409, f"Already Exists: Table {project}:{dataset_id}."
                                    f"{ref['tableId']}", "duplicate")
            t = Table(ds, ref["tableId"])
            self.table_settings(t, obj, project, True)
            if "view" in obj:
                t.view = {"query": obj["view"]["query"], "useLegacySql": False}
            else:
                t.fields = check_fields(obj.get("schema", {}).get("fields", []))
                if "timePartitioning" in obj:
                    self.check_partitioning(t, obj["timePartitioning"])
                    t.time_partitioning = obj["timePartitioning"]
                if "clustering" in obj:
                    t.clustering = check_clustering(obj["clustering"], t.fields)
            ds.tables[t.id] = t
            return 200, t.to_json(), ()

    def tables_get(self, project, dataset_id, table_id):
        self.check_params({"selectedFields", "view"})
        with lock:
            return 200, self.table(project, dataset_id, table_id).to_json(), ()

    def tables_list(self, project, dataset_id):
        self.check_params({"maxResults", "pageToken"})
        with lock:
            ds = self.dataset(project, dataset_id)
            items = [{"kind": "bigquery#table", "id": t.ref(), "type": t.kind,
                      "tableReference": {"projectId": project, "datasetId": ds.id,
                                         "tableId": t.id}} for t in ds.tables.values()]
        return 200, {"kind": "bigquery#tableList", "etag": "x", "tables": items,
                     "totalItems": len(items)}, ()

    def tables_patch(self, project, dataset_id, table_id):
        self.check_params({"autodetect_schema"})
        obj, _ = self.json_body(TABLE_KEYS, "table")
        with lock:
            t = self.table(project, dataset_id, table_id)
            if_match = self.headers.get("If-Match")
            if if_match and if_match.strip('"') != t.etag():
                raise ApiError(412, "Precondition check failed.", "conditionNotMet")
            ref = obj.get("tableReference")
            if ref and (ref.get("tableId", table_id) != table_id):
                raise ApiError(400, "tableReference.tableId must match the path (a table cannot "
                                    "be renamed)")
            fields = t.fields
            if "schema" in obj and t.view is None:
                if not isinstance(obj["schema"], dict):
                    raise ApiError(400, "Invalid schema: {\"fields\": [...]} expected")
                new = check_fields(obj["schema"].get("fields", []))
                fields = merge_schema(t, t.fields, new, t.ref())
            self.table_settings(t, obj, project, False)
            added = {f["name"].lower() for f in fields} - {f["name"].lower() for f in t.fields}
            for name in added:
                t.hidden[name] = time.time() + float(CONFIG["stream_after_patch"])
            t.fields = fields
            if "view" in obj:
                t.view = {"query": obj["view"]["query"], "useLegacySql": False}
            if "clustering" in obj:
                if t.view is not None:
                    raise ApiError(400, "A view cannot be clustered")
                t.clustering = check_clustering(obj["clustering"], fields)
            t.version += 1
            return 200, t.to_json(), ()

    tables_update = tables_patch

    def tables_delete(self, project, dataset_id, table_id):
        self.check_params(set())
        with lock:
            t = self.table(project, dataset_id, table_id)
            del t.dataset.tables[t.id]
        return 204, None, ()

    # -- insertAll
    def insertAll(self, project, dataset_id, table_id):
        self.check_params(set())
        obj, nbytes = self.json_body(INSERTALL_KEYS, "")
        rows = obj.get("rows")
        self.log_extra["bytes"] = nbytes
        if not isinstance(rows, list) or not rows:
            raise ApiError(400, "No rows present in the request.")
        self.log_extra["rows"] = len(rows)
        if CONFIG["record_ids"]:
            self.log_extra["insert_ids"] = [r.get("insertId") if isinstance(r, dict) else None
                                            for r in rows]
        if nbytes > CONFIG["max_request_bytes"]:
            raise ApiError(400, f"Request payload size exceeds the limit: "
                                f"{CONFIG['max_request_bytes']} bytes.")
        if len(rows) > CONFIG["max_rows"]:
            raise ApiError(400, f"too many rows present in the request, limit: "
                                f"{CONFIG['max_rows']} row count: {len(rows)}.")
        if obj.get("templateSuffix") is not None:
            raise ApiError(400, "templateSuffix: not supported by this fake")
        for r in rows:
            if not isinstance(r, dict):
                raise ApiError(400, "Invalid JSON payload received. rows[] must be objects")
            unknown = set(r) - ROW_KEYS
            if unknown:
                raise ApiError(400, f'Invalid JSON payload received. Unknown name '
                                    f'"{sorted(unknown)[0]}" at \'rows[0]\': Cannot find field.')
            if "insertId" in r and not isinstance(r["insertId"], str):
                raise ApiError(400, "Invalid JSON payload received. insertId must be a string")
            if len(r.get("insertId") or "") > CONFIG["max_insert_id"]:
                raise ApiError(400, f"insertId longer than {CONFIG['max_insert_id']} characters: "
                                    f"{r['insertId'][:40]}...")
            if not isinstance(r.get("json"), dict):
                raise ApiError(400, "Invalid JSON payload received. rows[].json must be an "
                                    "object")
        skip = obj.get("skipInvalidRows", False) is True
        ignore = obj.get("ignoreUnknownValues", False) is True
        with lock:
            t = self.table(project, dataset_id, table_id)
            if t.view is not None:
                raise ApiError(400, f"Cannot add rows to a view: {t.ref()}")
            if time.time() - t.created < float(CONFIG["stream_after_create"]):
                raise ApiError(404, f"Not found: Table {t.ref()}")
            # Columns a patch added are unknown to streaming for a while.
            now = time.time()
            fields = [f for f in t.fields if t.hidden.get(f["name"].lower(), 0) <= now]
            version = t.version
            tp_field = (t.time_partitioning or {}).get("field")
        rrules = row_rules()
        typed, errors = [], {}
        for i, r in enumerate(rows):
            try:
                # (no row can be larger than a request that is not)
                size = 0 if nbytes <= CONFIG["max_row_bytes"] else len(
                    json.dumps(r["json"], ensure_ascii=False).encode("utf-8", "replace"))
                if size > CONFIG["max_row_bytes"]:
                    raise RowError("", f"Maximum allowed row size exceeded. Allowed: "
                                       f"{CONFIG['max_row_bytes']} Row size: {size}")
                for rule in rrules:
                    j = r["json"]
                    values = [j.get(rule["field"])] if rule.get("field") else list(j.values())
                    if rule.get("value") in values:
                        spend_row_rule(rule)
                        raise RowError(rule.get("field", ""), rule.get("message",
                                                                       "injected row error"),
                                       rule.get("reason", "invalid"))
                if not CONFIG["check_values"]:
                    typed.append((i, r.get("insertId"), r["json"]))
                    continue
                row = check_row(r["json"], fields, ignore)
                if tp_field and CONFIG["partition_window"] and row.get(tp_field):
                    self.check_window(row[tp_field], tp_field)
                typed.append((i, r.get("insertId"), row))
            except RowError as e:
                errors[i] = e
        if errors and not skip:
            out = []
            for i in range(len(rows)):
                e = errors.get(i)
                out.append({"index": i, "errors": [
                    {"reason": e.reason, "location": e.location, "debugInfo": "",
                     "message": e.message} if e else
                    {"reason": "stopped", "location": "", "debugInfo": "", "message": ""}]})
            return 200, {"kind": "bigquery#tableDataInsertAllResponse", "insertErrors": out}, ()
        with lock:
            t2 = self.table(project, dataset_id, table_id)
            if t2 is not t or t.version != version:
                raise ApiError(503, "The table changed during the request; retry",
                               "backendError")
            now = time.time()
            window = float(CONFIG["dedup_seconds"])
            if len(t.dedup) > 200000:
                t.dedup = {k: v for k, v in t.dedup.items() if now - v < window}
            stored = 0
            for i, iid, row in typed:
                if iid and CONFIG["dedup"]:
                    seen = t.dedup.get(iid)
                    if seen is not None and now - seen < window:
                        stats["deduplicated"] += 1
                        continue
                    t.dedup[iid] = now
                if CONFIG["store_rows"]:
                    t.rows.append(json.dumps(row, separators=(",", ":"), ensure_ascii=False))
                t.row_count += 1
                t.streamed += 1
                t.oldest_streamed = t.oldest_streamed or now
                stored += 1
            stats["rows_stored"] += stored
        out = {"kind": "bigquery#tableDataInsertAllResponse"}
        if errors:
            out["insertErrors"] = [{"index": i, "errors": [
                {"reason": e.reason, "location": e.location, "debugInfo": "",
                 "message": e.message}]} for i, e in sorted(errors.items())]
        return 200, out, ()

    def check_window(self, value, name):
        day = datetime.date.fromisoformat(value[:10])  # typed DATE, DATETIME, TIMESTAMP (UTC)
        today = datetime.datetime.now(datetime.timezone.utc).date()
        if not (today - datetime.timedelta(days=1825) <= day <=
                today + datetime.timedelta(days=366)):
            raise RowError(name, f"Value {value} for field {name} is outside the allowed bounds. "
                                 "You can only stream to partitions within 1825 days in the past "
                                 "and 366 days in the future relative to the current date.")

    # -- jobs
    def parse_job(self, project, obj, upload):
        ref = obj.get("jobReference") or {}
        if not isinstance(ref, dict) or set(ref) - {"projectId", "jobId", "location"}:
            raise ApiError(400, "Invalid jobReference")
        if ref.get("projectId", project) != project:
            raise ApiError(400, "jobReference.projectId must be the project of the path")
        job_id = ref.get("jobId") or ("job_" + secrets.token_urlsafe(18).replace("-", "_"))
        if not JOB_ID_RE.match(job_id):
            raise ApiError(400, f"Invalid job ID \"{job_id}\". Job IDs must be alphanumeric (plus "
                                "underscores and dashes) and must be at most 1024 characters "
                                "long.")
        conf = obj.get("configuration")
        if not isinstance(conf, dict) or set(conf) - JOBCONF_KEYS:
            raise ApiError(400, "Invalid configuration")
        load = conf.get("load")
        if not isinstance(load, dict):
            raise ApiError(400, "The fake runs load jobs only: configuration.load is required")
        unknown = set(load) - LOAD_KEYS
        if unknown:
            raise ApiError(400, f'Invalid JSON payload received. Unknown name '
                                f'"{sorted(unknown)[0]}" at \'job.configuration.load\': Cannot '
                                "find field.")
        if not upload:
            raise ApiError(400, "Load configuration must specify at least one source URI (the "
                                "fake has no Cloud Storage: upload the data with "
                                "/upload/bigquery/v2/...?uploadType=multipart or resumable)")
        dest = load.get("destinationTable")
        if not isinstance(dest, dict) or not all(dest.get(k) for k in
                                                 ("projectId", "datasetId", "tableId")):
            raise ApiError(400, "configuration.load.destinationTable needs projectId, datasetId "
                                "and tableId")
        fmt = load.get("sourceFormat", "CSV")
        if fmt not in ("AVRO", "NEWLINE_DELIMITED_JSON"):
            raise ApiError(400, f"sourceFormat {fmt}: this fake loads AVRO and "
                                "NEWLINE_DELIMITED_JSON (BigQuery's default is CSV)")
        for k, allowed in (("writeDisposition", ("WRITE_APPEND", "WRITE_TRUNCATE", "WRITE_EMPTY")),
                           ("createDisposition", ("CREATE_IF_NEEDED", "CREATE_NEVER"))):
            if k in load and load[k] not in allowed:
                raise ApiError(400, f"Invalid {k}: {load[k]}")
        for o in load.get("schemaUpdateOptions") or []:
            if o not in ("ALLOW_FIELD_ADDITION", "ALLOW_FIELD_RELAXATION"):
                raise ApiError(400, f"Invalid schemaUpdateOptions value {o}")
        if "schema" in load:
            check_fields((load["schema"] or {}).get("fields", []))
        with lock:
            ds = datasets.get((dest["projectId"], dest["datasetId"]))
            if ds is None:
                raise ApiError(404, f"Not found: Dataset {dest['projectId']}:{dest['datasetId']}")
            location = ref.get("location") or ds.location
            if location.lower() != ds.location.lower():
                raise ApiError(404, f"Not found: Dataset {dest['projectId']}:{dest['datasetId']} "
                                    f"was not found in location {location}")
        return job_id, location

    def create_job(self, project, obj, data, upload):
        job_id, location = self.parse_job(project, obj, upload)
        self.log_extra["job_id"] = job_id
        with lock:
            if (project, job_id) in jobs:
                old = jobs[(project, job_id)]
                raise ApiError(409, f"Already Exists: Job {project}:{old.location}.{job_id}",
                               "duplicate")
            resource = {"configuration": json.loads(json.dumps(obj["configuration"]))}
            job = Job(project, job_id, location, resource, data, upload)
            job.email = self.email
            jobs[(project, job_id)] = job
        threading.Thread(target=finish_job, args=(job,), daemon=True).start()
        with lock:
            return job.to_json()

    def jobs_insert(self, project):
        self.check_params(set())
        obj, _ = self.json_body(JOB_KEYS, "job")
        self.create_job(project, obj, None, None)  # raises: no media

    def jobs_get(self, project, job_id):
        self.check_params({"location"})
        with lock:
            job = jobs.get((project, job_id))
            loc = self.param("location")
            if job is None or (loc and loc.lower() != job.location.lower()):
                raise ApiError(404, f"Not found: Job {project}:{loc or 'US'}.{job_id}")
            return 200, job.to_json(), ()

    def query_answer(self, project, job_id, q, kind, start, max_results, int64_ts):
        ref = {"projectId": project, "jobId": job_id, "location": q["location"]}
        if time.time() < q["ready"]:
            return {"kind": kind, "jobReference": ref, "jobComplete": False}
        rows, token = query_page(q, start, max_results, int64_ts)
        out = {"kind": kind, "jobReference": ref, "schema": {"fields": q["fields"]},
               "totalRows": str(len(q["rows"])), "totalBytesProcessed": "0",
               "jobComplete": True, "cacheHit": False}
        if rows:
            out["rows"] = rows
        if token:
            out["pageToken"] = token
        return out

    def jobs_query(self, project):
        self.check_params(set())
        body, _ = self.json_body(QUERY_KEYS, "query_request")
        fmt = body.get("formatOptions") or {}
        if not isinstance(fmt, dict) or set(fmt) - {"useInt64Timestamp"}:
            raise ApiError(400, f"Invalid formatOptions {fmt!r}")
        with lock:
            fields, columns, rows = lookup_query(project, body)
            ds_loc = datasets[tuple(parse_lookup_query(body["query"])[0]["ref"].split(".")[:2])]\
                .location
            job_id = "job_" + secrets.token_urlsafe(18).replace("-", "_")
            q = {"fields": fields, "columns": columns, "rows": rows, "location": ds_loc,
                 "ready": time.time() + float(CONFIG["query_seconds"])}
            queries[(project, job_id)] = q
            self.log_extra["job_id"] = job_id
            return 200, self.query_answer(project, job_id, q, "bigquery#queryResponse", 0,
                                          body.get("maxResults"),
                                          bool(fmt.get("useInt64Timestamp"))), ()

    def jobs_getQueryResults(self, project, job_id):
        self.check_params({"location", "pageToken", "startIndex", "maxResults", "timeoutMs",
                           "formatOptions.useInt64Timestamp"})
        self.log_extra["job_id"] = job_id
        with lock:
            q = queries.get((project, job_id))
            loc = self.param("location")
            if q is None or (loc and loc.lower() != q["location"].lower()):
                raise ApiError(404, f"Not found: Job {project}:{loc or 'US'}.{job_id}")
            start = 0
            token = self.param("pageToken")
            if token is not None:
                m = re.fullmatch(r"page(\d+)", token)
                if not m:
                    raise ApiError(400, f"Invalid page token {token!r}")
                start = int(m[1])
            elif self.param("startIndex") is not None:
                start = int(self.param("startIndex"))
            ts = self.param("formatOptions.useInt64Timestamp", "false")
            if ts not in ("true", "false"):
                raise ApiError(400, "formatOptions.useInt64Timestamp must be true or false")
            return 200, self.query_answer(project, job_id, q, "bigquery#getQueryResultsResponse",
                                          start, self.param("maxResults"), ts == "true"), ()

    def upload(self, method, project):
        try:
            self.email = self.authenticate()["email"]
            if project not in args.project:
                raise ApiError(404, f"Not found: Project {project}")
            kind = self.param("uploadType")
            if method == "POST" and kind == "multipart":
                self.check_params(set())
                return self.send_json(200, self.multipart(project))
            if method == "POST" and kind == "resumable":
                self.check_params(set())
                obj, _ = self.json_body(JOB_KEYS, "job")
                self.parse_job(project, obj, "resumable")
                upload_id = secrets.token_urlsafe(24)
                announced = self.headers.get("X-Upload-Content-Length")
                if announced is not None and not announced.isdigit():
                    raise ApiError(400, f"Bad X-Upload-Content-Length {announced!r}")
                with lock:
                    uploads[upload_id] = {"project": project, "job": obj, "data": bytearray(),
                                          "announced": announced and int(announced)}
                host = self.headers.get("Host", f"127.0.0.1:{args.port}")
                loc = (f"http://{host}/upload/bigquery/v2/projects/{project}/jobs?"
                       f"uploadType=resumable&upload_id={upload_id}")
                return self.send(200, b"", headers=[("Location", loc),
                                                    ("X-GUploader-UploadID", upload_id)])
            if method == "PUT" and kind == "resumable":
                self.check_params({"upload_id"})
                return self.resumable_put(project)
            raise ApiError(400, f"{method} with uploadType={kind}: the fake takes POST "
                                "uploadType=multipart, POST uploadType=resumable and then PUT "
                                "to the session URI")
        except ApiError as e:
            self.read_body_quietly()
            return self.send_json(e.code, e.body(), e.headers)

    def multipart(self, project):
        ctype = self.headers.get("Content-Type", "")
        m = re.match(r'^multipart/related;\s*boundary="?([^";]+)"?', ctype, re.I)
        if not m:
            raise ApiError(400, f"uploadType=multipart needs Content-Type multipart/related; "
                                f"boundary=... (got {ctype!r})")
        body = self.read_body()
        delim = b"--" + m[1].encode()
        chunks = body.split(delim)
        # chunks: preamble, part1, part2, "--\r\n" epilogue
        if len(chunks) != 4 or not chunks[3].startswith(b"--"):
            raise ApiError(400, "Malformed multipart body: expected exactly two parts (the job "
                                "as JSON, then the data) and a closing delimiter --BOUNDARY--")
        parts = []
        for c in chunks[1:3]:
            if not c.startswith(b"\r\n"):
                raise ApiError(400, "Malformed multipart body: CRLF after the delimiter")
            head, sep, data = c[2:].partition(b"\r\n\r\n")
            if not sep or not data.endswith(b"\r\n"):
                raise ApiError(400, "Malformed multipart body: a part needs headers, a blank "
                                    "line, and CRLF before the next delimiter")
            headers = {}
            for line in head.split(b"\r\n"):
                if line:
                    k, _, v = line.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
            parts.append((headers, data[:-2]))
        if not parts[0][0].get("content-type", "").lower().startswith("application/json"):
            raise ApiError(400, "Malformed multipart body: the first part must be "
                                "application/json (the job resource)")
        try:
            obj = json.loads(parts[0][1].decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"Invalid JSON payload received. {e}", "parseError")
        if not isinstance(obj, dict) or set(obj) - JOB_KEYS:
            raise ApiError(400, "Invalid JSON payload received in the job part")
        self.log_extra["bytes"] = len(parts[1][1])
        return self.create_job(project, obj, bytes(parts[1][1]), "multipart")

    def resumable_put(self, project):
        upload_id = self.param("upload_id")
        body = self.read_body()
        with lock:
            up = uploads.get(upload_id)
        if up is None or up["project"] != project:
            raise ApiError(404, "No such upload session (unknown upload_id)", "notFound")
        cr = self.headers.get("Content-Range")
        total = None
        if cr:
            m = re.match(r"^bytes (\*|(\d+)-(\d+))/(\*|\d+)$", cr.strip())
            if not m:
                raise ApiError(400, f"Bad Content-Range {cr!r}")
            total = None if m[4] == "*" else int(m[4])
            if m[1] == "*":
                if body:
                    raise ApiError(400, "Content-Range bytes */N with a body")
                have = len(up["data"])
                if total is None or have < total:
                    hdr = [("Range", f"bytes=0-{have - 1}")] if have else []
                    return self.send(308, b"", headers=hdr)
            else:
                a, b = int(m[2]), int(m[3])
                if a != len(up["data"]) or b - a + 1 != len(body):
                    raise ApiError(400, f"Content-Range {cr} does not continue the upload at "
                                        f"byte {len(up['data'])} with this body "
                                        f"({len(body)} bytes)")
                up["data"] += body
        else:
            if up["data"]:
                raise ApiError(400, "a PUT without Content-Range after partial chunks")
            up["data"] += body
            total = len(up["data"])
        if total is None or len(up["data"]) < total:
            have = len(up["data"])
            return self.send(308, b"", headers=[("Range", f"bytes=0-{have - 1}")] if have else [])
        if len(up["data"]) > total:
            raise ApiError(400, "more bytes than the Content-Range total")
        if up["announced"] is not None and up["announced"] != len(up["data"]):
            raise ApiError(400, f"the upload has {len(up['data'])} bytes, X-Upload-Content-Length "
                                f"announced {up['announced']}")
        with lock:
            uploads.pop(upload_id, None)
        self.log_extra["bytes"] = len(up["data"])
        return self.send_json(200, self.create_job(project, up["job"], bytes(up["data"]),
                                                   "resumable"))

    # -- control
    def control(self, method, what):
        self.kind = "control"
        body = self.read_body() if method in ("POST", "PUT") else b""
        obj = json.loads(body) if body.strip() else {}
        parts = what.split("/")
        with lock:
            if what == "config":
                if method == "POST":
                    for k, v in obj.items():
                        if k not in CONFIG:
                            raise ApiError(400, f"unknown config key {k}; known: "
                                                f"{sorted(CONFIG)}")
                        CONFIG[k] = v
                return self.send_json(200, CONFIG)
            if what == "faults" and method == "POST":
                for r in obj.get("rules", []):
                    if r.get("kind") not in ("status", "token_error", "slow", "reset",
                                             "apply_then_drop", "row_error", "job_error"):
                        raise ApiError(400, f"unknown fault kind {r.get('kind')}")
                    rules.append(dict(r))
                return self.send_json(200, {"rules": rules})
            if what == "faults":
                return self.send_json(200, {"rules": rules})
            if what == "faults/clear":
                rules.clear()
                return self.send_json(200, {"rules": rules})
            if what == "outage" and method == "POST":
                seconds = float(obj.get("seconds", 1))
                threading.Thread(target=go_down, args=(seconds,), daemon=True).start()
                return self.send_json(200, {"down_for": seconds})
            if what == "revoke_tokens":
                n = len(tokens)
                tokens.clear()
                return self.send_json(200, {"revoked": n})
            if what == "tables":
                want = self.param("dataset")
                out = []
                for (p, d), ds in datasets.items():
                    if want and d != want:
                        continue
                    for t in ds.tables.values():
                        out.append({"project": p, "dataset": d, "table": t.id, "type": t.kind,
                                    "schema": t.fields, "timePartitioning": t.time_partitioning,
                                    "clustering": t.clustering, "view": t.view,
                                    "num_rows": t.row_count,
                                    "created": t.created})
                return self.send_json(200, out)
            if parts[0] in ("dump", "current") and len(parts) == 3:
                project = self.param("project", args.project[0])
                ds = datasets.get((project, parts[1]))
                if ds is None:
                    raise ApiError(404, f"Not found: Dataset {project}:{parts[1]}")
                if parts[0] == "current":
                    return self.send_json(200, current_rows(ds, parts[2], self.param("key")))
                t = ds.tables.get(parts[2])
                if t is None:
                    raise ApiError(404, f"Not found: Table {project}:{parts[1]}.{parts[2]}")
                rows = stored_rows(t)
                return self.send_json(200, {"schema": t.fields, "rows": rows,
                                            "num_rows": t.row_count})
            if what == "jobs":
                out = []
                for job in jobs.values():
                    conf = job.resource["configuration"].get("load", {})
                    out.append({"jobId": job.id, "project": job.project,
                                "location": job.location, "state": job.state,
                                "errorResult": job.error, "outputRows": job.output_rows,
                                "sourceFormat": conf.get("sourceFormat"),
                                "destination": conf.get("destinationTable"),
                                "upload": job.upload,
                                "created": job.created})
                return self.send_json(200, out)
            if what == "requests":
                since = int(self.param("since", "0"))
                return self.send_json(200, request_log[since:])
            if what == "stats":
                return self.send_json(200, stats)
        raise ApiError(404, f"unknown control {method} /_fake/{what}")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


def go_down(seconds):
    """An outage: stop listening (connections are refused), close every open
    connection, come back after seconds with the state kept."""
    time.sleep(0.05)  # let the control's answer go out
    with lock:
        outage["until"] = time.time() + seconds
        server = outage["server"]
        for c in list(connections):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    server.shutdown()  # (until then, requests are dropped: see dispatch)
    server.server_close()


def orphan_watch(parent):
    """Exit when the process that started us is gone."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def main():
    global args
    ap = argparse.ArgumentParser(description="a strict local BigQuery (see the docstring)")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--project", action="append", required=True)
    ap.add_argument("--account", action="append", default=[],
                    help="EMAIL=PUBLIC_KEY_PEM[=KEY_ID]")
    ap.add_argument("--token-uri", required=True)
    ap.add_argument("--config", default="{}")
    ap.add_argument("--log")
    ap.add_argument("--no-orphan-watch", action="store_true")
    args = ap.parse_args()
    for a in args.account:
        email, pem, *kid = a.split("=")
        with open(pem, "rb") as f:
            key = serialization.load_pem_public_key(f.read())
        accounts[email] = {"key": key, "kid": kid[0] if kid else None}
    strict_avro_decimals()
    quiet_avro()
    for k, v in json.loads(args.config).items():
        if k not in CONFIG:
            sys.exit(f"unknown config key {k}")
        CONFIG[k] = v
    if not args.no_orphan_watch:
        threading.Thread(target=orphan_watch, args=(os.getppid(),), daemon=True).start()
    while True:
        delay = outage["until"] - time.time()
        if delay > 0:
            time.sleep(delay)
        server = Server(("127.0.0.1", args.port), Handler)
        with lock:
            outage["server"] = server
        server.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    main()
