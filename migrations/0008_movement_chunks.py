"""Movement samples in chunks, in a table partitioned by week (PostgreSQL only).

The row table ``movement_sample`` (84 bytes a sample on disk) becomes ``movement_chunk``
(about 6; ``storage/movement_chunks.py`` describes the layout), and ``movement_sample`` a
view of the chunks as rows. SQLite, the embedded default, keeps the row table.

The conversion runs in steps that each commit (``IN_STEPS``): the row table is renamed
``movement_sample_rows``, then each step moves the next ``DEVICEHUB_MOVEMENT_MIGRATION_BATCH``
samples (by key order) into chunks with one statement that deletes them from the row table
and inserts their chunks, creating the weeks' partitions first. A sample is in exactly one
of the two tables at every commit, so an interrupted conversion loses nothing and the next
``devicehub migrate`` goes on from where it stopped. Once the row table is empty it is
dropped and the view created.
"""

import logging
import os
import time

import peewee

from devicehub.storage import movement_chunks as chunks

IN_STEPS = True
DEFAULT_BATCH = 200_000

log = logging.getLogger(__name__)

_ROWS = "movement_sample_rows"

_NEXT_WEEKS = f"""
SELECT DISTINCT ts - mod(ts, {chunks.PARTITION_SECONDS}) FROM (
    SELECT ts FROM {_ROWS} ORDER BY device_id, ts LIMIT %s
) AS batch
WHERE ts >= %s AND ts < %s
"""

_MOVE_BATCH = f"""
WITH moved AS (
    DELETE FROM {_ROWS}
    WHERE (device_id, ts) IN (SELECT device_id, ts FROM {_ROWS} ORDER BY device_id, ts LIMIT %s)
    RETURNING device_id, ts, val, child_id
)
INSERT INTO movement_chunk
    (device_id, window_start, first_offset, last_offset, child_id, sample_count, offsets, vals)
SELECT device_id, window_start, min(off), max(off), child_id, count(*),
       array_agg(off ORDER BY off), array_agg(val ORDER BY off)
FROM (
    SELECT device_id, child_id, val,
           ts - mod(ts, {chunks.WINDOW_SECONDS}) AS window_start,
           mod(ts, {chunks.WINDOW_SECONDS})::smallint AS off
    FROM moved
) AS samples
GROUP BY device_id, window_start, child_id
"""


def _relation_kind(db, name):
    row = db.execute_sql(
        "SELECT c.relkind FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE c.relname = %s AND n.nspname = current_schema()",
        (name,),
    ).fetchone()
    return row[0] if row else None


def upgrade(db):
    if not isinstance(db, peewee.PostgresqlDatabase):
        return  # SQLite keeps the row table
    batch = int(os.environ.get("DEVICEHUB_MOVEMENT_MIGRATION_BATCH", DEFAULT_BATCH))
    with db.atomic():
        if _relation_kind(db, "movement_sample") == "r":
            db.execute_sql(f"ALTER TABLE movement_sample RENAME TO {_ROWS}")
        for statement in chunks.SCHEMA.split(";"):
            if statement.strip():
                db.execute_sql(statement)
    steps = 0
    horizon = int(time.time()) + 53 * chunks.PARTITION_SECONDS
    while _relation_kind(db, _ROWS) is not None:
        with db.atomic():
            weeks = db.execute_sql(_NEXT_WEEKS, (batch, chunks.PLAUSIBLE_FROM, horizon))
            existing = chunks.partitions()
            for (week,) in weeks.fetchall():
                if week not in existing:
                    chunks.create_partition(week)
            cursor = db.execute_sql(_MOVE_BATCH, (batch,))
            if cursor.rowcount == 0:  # no sample left: the conversion is done
                db.execute_sql(f"DROP TABLE {_ROWS}")
                db.execute_sql(chunks.SAMPLE_VIEW)
                break
        steps += 1
        log.info("movement samples: step %d (up to %d samples) converted", steps, batch)
