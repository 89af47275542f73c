-- The C++/PostgreSQL error boundary (pgsink._selftest_boundary): errors
-- cross it in both directions, C++ destructors run on the way out, and the
-- backend stays usable afterwards.
--
-- Every mode except 'destroyed' constructs exactly one Witness object, whose
-- destructor counts itself; 'destroyed' returns that count.
SELECT pgsink._selftest_boundary('destroyed') AS destroyed_before;

-- A guarded call to PostgreSQL that succeeds.
SELECT pgsink._selftest_boundary('ok');

-- A PostgreSQL ERROR (int4in) inside a guarded call: it becomes a C++
-- exception, unwinds, and is re-raised with its original SQLSTATE and text.
SELECT pgsink._selftest_boundary('pg_error');
-- A std::exception: reported as an internal error with its message.
SELECT pgsink._selftest_boundary('cpp_exception');
-- A pgsink::Error: its SQLSTATE and HINT travel with it.
SELECT pgsink._selftest_boundary('pgsink_error');
-- std::bad_alloc: reported as out of memory.
SELECT pgsink._selftest_boundary('bad_alloc');
-- An unknown mode.
SELECT pgsink._selftest_boundary('no_such_mode');

-- SQLSTATEs, as a client sees them.
DO $$
DECLARE
    mode text;
    state text;
BEGIN
    FOREACH mode IN ARRAY ARRAY['pg_error', 'cpp_exception', 'pgsink_error', 'bad_alloc'] LOOP
        BEGIN
            PERFORM pgsink._selftest_boundary(mode);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE;
            RAISE NOTICE '% -> SQLSTATE %', mode, state;
        END;
    END LOOP;
END
$$;

-- Every Witness was destroyed: 1 (ok) + 4 (failures) + 1 (unknown mode)
-- + 4 (the DO block), whether the function returned or failed.
SELECT pgsink._selftest_boundary('destroyed') AS destroyed_after;

-- The backend is still usable: plain queries and transactions work, and
-- an error inside a savepoint rolls back to it.
SELECT 1 + 1 AS still_alive;
CREATE TEMP TABLE boundary_log (step int);
BEGIN;
INSERT INTO boundary_log VALUES (1);
SAVEPOINT before_failure;
INSERT INTO boundary_log VALUES (2);
SELECT pgsink._selftest_boundary('pg_error');
ROLLBACK TO SAVEPOINT before_failure;
SELECT pgsink._selftest_boundary('ok');
INSERT INTO boundary_log VALUES (3);
COMMIT;
SELECT step FROM boundary_log ORDER BY step;
SELECT pgsink._selftest_boundary('destroyed') AS destroyed_at_end;
