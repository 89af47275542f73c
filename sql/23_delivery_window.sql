-- The HTTP delivery window (src/http/delivery_window.cpp) driven through
-- scripted answers, without a network: batches in order with one request in
-- flight (a failed batch goes again before the next, with the same key);
-- jittered exponential back-off and a Retry-After capped at the most; the
-- cursor waits for the contiguous prefix of acknowledged batches with three
-- in flight; bisection isolates the one refused entry; on_rejection = 'stop'
-- holds a refused batch but still splits one refused as too large; per-entry
-- answers park the refused entries and send only the retryable ones again;
-- with several in flight, a batch that depends on those before it waits
-- until they are done (retries included) and keeps later ones back, one
-- alone also keeps every later one back until it is done, and the second
-- half of a split batch waits for the first.
-- It returns 1, or fails naming every check that did not hold.
SELECT pgsink._selftest_boundary('delivery_window');
-- The spool reader counts the entries of every piece a delivery reads with a
-- vectorized newline count: it agrees with a byte loop at every length up to
-- 9,000 bytes, every alignment, and densities from all newlines to none.
SELECT pgsink._selftest_boundary('count_newlines');
-- The spool's write thread held (as by a round's fsync) while buffers of
-- 3 MB (rows of up to 4 MB) are submitted: at most 20 MB is queued, not 64
-- buffers of them; and of 60 buffers that rows of 3 MB grew, at most 40 MB
-- is kept for reuse.
SELECT pgsink._selftest_boundary('write_behind');
