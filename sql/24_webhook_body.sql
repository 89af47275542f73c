-- The webhook's request body (src/sinks/webhook_sink.cpp), without a network:
-- it is made from the batch's lines while libcurl sends it, never copied
-- whole. Read in pieces of 1 byte up to 2 MB, and again after a rewind (a
-- kept-alive connection found closed), it must be exactly {"data":[...]}
-- with the entries joined by commas (entries across 64 kB pieces, one longer
-- than a piece, an empty batch), its announced size (Content-Length) must be
-- its size, and its signature must be the one over that whole body.
-- It returns 1, or fails naming every check that did not hold.
SELECT pgsink._selftest_boundary('webhook');
