-- The ClickHouse sink's pure parts (src/sinks/clickhouse_selftest.cpp),
-- without a server: each type family's changelog value as its ClickHouse
-- column takes it in JSONEachRow (numeric digits as written, floats as
-- their IEEE bits, json as its exact text in a string, arrays with their
-- NULL flag); lines scanned once, escapes and nesting never taken for
-- structure, malformed lines refused; columns named like helper columns
-- renamed; pgsink.clickhouse_url with a path or settings kept, a query
-- parameter, another scheme or a fragment refused with what to do.
-- It returns 1, or fails naming every check that did not hold.
SELECT pgsink._selftest_boundary('clickhouse');
