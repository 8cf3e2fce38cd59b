"""What the movement store takes on disk, beside the row layout it replaced.

Bytes per sample: every relation of the store (the partitions of ``movement_chunk`` with
their indexes and TOAST tables) over the samples the chunks hold; the same for the
baseline row table (``seed.MOVEMENT_BASELINE``) over its rows.
"""

from __future__ import annotations

import psycopg2
from seed import MOVEMENT_BASELINE

_CHUNK_BYTES = """
SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0)
FROM pg_inherits AS i WHERE i.inhparent = 'movement_chunk'::regclass
"""


def footprint(url: str) -> dict[str, float]:
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(_CHUNK_BYTES)
        chunk_bytes = int(cursor.fetchone()[0])  # sums come back as Decimal
        cursor.execute("SELECT count(*), coalesce(sum(sample_count), 0) FROM movement_chunk")
        chunks, samples = (int(value) for value in cursor.fetchone())
        cursor.execute(f"SELECT pg_total_relation_size('{MOVEMENT_BASELINE}')")
        (row_bytes,) = cursor.fetchone()
        cursor.execute(f"SELECT count(*) FROM {MOVEMENT_BASELINE}")
        (rows,) = cursor.fetchone()
    return {
        "samples": samples,
        "chunks": chunks,
        "bytes": chunk_bytes,
        "bytes_per_sample": chunk_bytes / samples if samples else float("nan"),
        "baseline_rows": int(rows),
        "baseline_bytes": int(row_bytes),
        "baseline_bytes_per_sample": row_bytes / rows if rows else float("nan"),
    }
