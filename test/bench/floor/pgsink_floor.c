/*
 * pgsink_floor: the floor of in-server logical decoding, for the benchmarks
 * only (test/bench/spool_bench.sh, test/bench/stream_bench.sh).
 *
 * An output plugin that decodes every change and deforms every tuple it
 * carries (the new tuple of an insert or update, the old tuple or key of an
 * update or delete) into palloc'd arrays, resetting a memory context per
 * change, and outputs nothing: pg_logical_slot_get_changes() returns no rows.
 * What it costs is what any in-server consumer must pay before it formats or
 * writes anything.
 *
 * The server logs how many changes and tuples it saw when the decoding ends
 * (one LOG line), so a benchmark can check it did the work.
 *
 * Not installed by pgsink: the bench cluster finds it through
 * dynamic_library_path, and output_plugin_libraries must name it.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "replication/logical.h"
#include "replication/output_plugin.h"
#include "utils/memutils.h"
#include "utils/rel.h"

PG_MODULE_MAGIC;

extern void _PG_output_plugin_init(OutputPluginCallbacks *cb);

typedef struct FloorState
{
	MemoryContext change_context;	/* reset after every change */
	uint64		changes;
	uint64		tuples;
} FloorState;

static void
deform(FloorState *state, Relation relation, HeapTuple tuple)
{
	TupleDesc	desc = RelationGetDescr(relation);
	Datum	   *values = palloc(desc->natts * sizeof(Datum));
	bool	   *nulls = palloc(desc->natts * sizeof(bool));

	heap_deform_tuple(tuple, desc, values, nulls);
	state->tuples++;
}

static void
floor_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init)
{
	FloorState *state = palloc0(sizeof(FloorState));

	state->change_context = AllocSetContextCreate(ctx->context, "pgsink_floor change",
												  ALLOCSET_DEFAULT_SIZES);
	ctx->output_plugin_private = state;
	opt->output_type = OUTPUT_PLUGIN_TEXTUAL_OUTPUT;
	opt->receive_rewrites = false;
}

static void
floor_shutdown(LogicalDecodingContext *ctx)
{
	FloorState *state = ctx->output_plugin_private;

	if (state->changes > 0)
		elog(LOG, "pgsink_floor: decoded " UINT64_FORMAT " changes, deformed " UINT64_FORMAT " tuples",
			 state->changes, state->tuples);
	MemoryContextDelete(state->change_context);
}

static void
floor_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
}

static void
floor_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr commit_lsn)
{
}

static void
floor_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation relation,
			 ReorderBufferChange *change)
{
	FloorState *state = ctx->output_plugin_private;
	MemoryContext old = MemoryContextSwitchTo(state->change_context);

	switch (change->action)
	{
		case REORDER_BUFFER_CHANGE_INSERT:
		case REORDER_BUFFER_CHANGE_UPDATE:
		case REORDER_BUFFER_CHANGE_DELETE:
			if (change->data.tp.newtuple != NULL)
				deform(state, relation, &change->data.tp.newtuple->tuple);
			if (change->data.tp.oldtuple != NULL)
				deform(state, relation, &change->data.tp.oldtuple->tuple);
			break;
		default:
			break;
	}
	state->changes++;
	MemoryContextSwitchTo(old);
	MemoryContextReset(state->change_context);
}

static void
floor_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, int nrelations,
			   Relation relations[], ReorderBufferChange *change)
{
}

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	cb->startup_cb = floor_startup;
	cb->begin_cb = floor_begin;
	cb->change_cb = floor_change;
	cb->truncate_cb = floor_truncate;
	cb->commit_cb = floor_commit;
	cb->shutdown_cb = floor_shutdown;
}
