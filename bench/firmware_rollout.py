"""A firmware rollout over 100,000 devices: how long creating it takes, and whether the
scheduler notifies the devices at the configured pace without exceeding any account's
message queue limit.

One PostgreSQL cluster with production durability (fsync, synchronous commit, full-page
writes on), ``devicehub serve`` (2 workers) on it, and a fleet seeded in bulk SQL:
``--devices`` devices of one type, bound ``--devices-per-account`` to an account, 5% of
them already on the package's version and 5% below its minimum version (so the skip rules
run over real rows). Then:

1. ``create``: CreateFirmwareRollout over every device of the type in three groups
   (1%, 10%, 100%): seconds for the call (one transaction: the updates, their history,
   the groups), and the updates it made;
2. ``notify``: that rollout canceled, a one-group rollout of the same package is created
   and the scheduler left to notify every device at ``--pace`` per minute. Sampled every
   second: the devices notified, and the largest number of pending messages of any
   account. Reported: the achieved rate beside the configured pace, the most notified in
   any 60 s window of their notification times (never above the pace), and the largest
   queue (never above DEVICEHUB_MESSAGE_QUEUE_LIMIT).

Run: ``.venv/bin/python bench/firmware_rollout.py [--devices 100000] [--pace 60000]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))

from devicehub.testing.pgcluster import DURABLE_SETTINGS, ThrowawayCluster
from devicehub.testing.stack import serve_env, start_stack
from devicehub.v1 import firmware_pb2, firmware_pb2_grpc

SECRET = "bench-secret-key-not-for-production"
ADMIN_PASSWORD = "bench-admin-password"
VERSION = "2.0.0"
MIN_VERSION = "1.0.0"

SEED = """
INSERT INTO device_type (name, code, description, created_at, updated_at)
VALUES ('bench speaker', 'FW01', '', now(), now());
INSERT INTO device_batch (device_type_id, batch_number, production_date, quantity, description,
    created_at, updated_at)
SELECT id, 'FWB01', '2026-01-01', %(devices)s, '', now(), now()
FROM device_type WHERE code = 'FW01';
INSERT INTO account (username, password_hash, phone, first_name, last_name, is_admin,
    created_at, updated_at, token_version)
SELECT 'fw-owner-' || n, 'not-a-hash', '', '', '', false, now(), now(), 0
FROM generate_series(1, %(accounts)s) AS n;
INSERT INTO device (device_type_id, batch_id, serial_number, device_code, mac_address, unique_id,
    device_alias, now_firmware_id, firmware_version, is_active, activated_at, last_log_file_id,
    created_at, updated_at)
SELECT t.id, b.id, lpad(n::text, 7, '0'), 'FW01' || lpad(n::text, 7, '0'),
    upper(substr(md5(n::text), 1, 2) || ':' || substr(md5(n::text), 3, 2) || ':'
        || substr(md5(n::text), 5, 2) || ':' || substr(md5(n::text), 7, 2) || ':'
        || substr(md5(n::text), 9, 2) || ':' || substr(md5(n::text), 11, 2)),
    md5('fw' || n::text)::uuid::text, '', 0,
    CASE WHEN n %% 20 = 0 THEN %(version)s WHEN n %% 20 = 1 THEN '0.9.0' ELSE '1.5.0' END,
    true, now(), 0, now(), now()
FROM generate_series(1, %(devices)s) AS n, device_type t, device_batch b
WHERE t.code = 'FW01' AND b.batch_number = 'FWB01';
INSERT INTO binding (device_id, account_id, child_id, nickname, is_primary, bound_at)
SELECT d.id, a.id, NULL, '', false, now()
FROM (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM device
      WHERE device_type_id = (SELECT id FROM device_type WHERE code = 'FW01')) d
JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM account
      WHERE username LIKE 'fw-owner-%%') a ON a.k = d.k / %(per_account)s;
ANALYZE
"""

QUEUES = """
SELECT coalesce(max(pending), 0) FROM (
    SELECT count(*) AS pending FROM message
    WHERE state IN ('queued', 'delivered') AND expires_at > now() AT TIME ZONE 'UTC'
    GROUP BY account_id) q
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--devices-per-account", type=int, default=5)
    parser.add_argument("--pace", type=int, default=60_000, help="notifications per minute")
    parser.add_argument("--queue-limit", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="devicehub-firmware-bench-"))
    accounts = -(-args.devices // args.devices_per_account)
    with ThrowawayCluster(settings=DURABLE_SETTINGS) as pg:
        env = serve_env(
            work,
            pg.url,
            SECRET,
            DEVICEHUB_WORKERS=str(args.workers),
            DEVICEHUB_LOG_LEVEL="WARNING",
            DEVICEHUB_ACCESS_LOG="off",
            DEVICEHUB_FIRMWARE_NOTIFY_PER_MINUTE=str(args.pace),
            DEVICEHUB_MESSAGE_QUEUE_LIMIT=str(args.queue_limit),
        )
        stack = start_stack("postgresql", env, work / "serve.log", ADMIN_PASSWORD)
        try:
            with psycopg2.connect(pg.url) as connection, connection.cursor() as cursor:
                started = time.perf_counter()
                cursor.execute(
                    SEED,
                    {
                        "devices": args.devices,
                        "accounts": accounts,
                        "per_account": args.devices_per_account,
                        "version": VERSION,
                    },
                )
                seeded = time.perf_counter() - started
                cursor.execute("SELECT id FROM device_type WHERE code = 'FW01'")
                device_type = cursor.fetchone()[0]
            print(f"seeded {args.devices:,} devices, {accounts:,} accounts in {seeded:.1f} s")
            figures = measure(stack, pg.url, device_type, args)
        finally:
            stack.stop()
    print_table(figures, args)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if figures["met"] else 1


def measure(stack, url: str, device_type: int, args: argparse.Namespace) -> dict:
    metadata = (("authorization", f"Bearer {stack.admin_token}"),)
    stub = firmware_pb2_grpc.FirmwareServiceStub(stack.channel())

    def requests():
        yield firmware_pb2.UploadFirmwarePackageRequest(
            device_type=device_type, version=VERSION, title="bench", min_version=MIN_VERSION
        )
        chunk = firmware_pb2.UploadFirmwarePackageRequest()
        chunk.data.data = b"\x5a" * (1024 * 1024)
        yield chunk

    package = stub.UploadFirmwarePackage(requests(), metadata=metadata, timeout=60)

    started = time.perf_counter()
    staged = stub.CreateFirmwareRollout(
        firmware_pb2.CreateFirmwareRolloutRequest(
            package_id=package.id, group_percents=[1, 10, 100]
        ),
        metadata=metadata,
        timeout=600,
    )
    create_seconds = time.perf_counter() - started
    stub.CancelFirmwareRollout(
        firmware_pb2.CancelFirmwareRolloutRequest(id=staged.id), metadata=metadata, timeout=600
    )

    # The pace is measured from here: the one-group rollout's devices are due at once.
    rollout = stub.CreateFirmwareRollout(
        firmware_pb2.CreateFirmwareRolloutRequest(package_id=package.id),
        metadata=metadata,
        timeout=600,
    )
    due = rollout.counts.queued
    started = time.monotonic()
    samples: list[tuple[float, int]] = []
    largest_queue = 0
    deadline = started + 60 * due / args.pace * 2 + 60
    # Not ``with connection``: in psycopg2 it opens a transaction even in autocommit, and
    # now() would stay at its start.
    with contextlib.closing(psycopg2.connect(url)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute(
                    "SELECT count(*) FROM firmware_update WHERE rollout_id = %s "
                    "AND state = 'notified'",
                    (rollout.id,),
                )
                notified = cursor.fetchone()[0]
                cursor.execute(QUEUES)
                largest_queue = max(largest_queue, cursor.fetchone()[0])
                samples.append((time.monotonic() - started, notified))
                if notified >= due:
                    break
                time.sleep(1.0)
    elapsed, notified = samples[-1]
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT notified_at FROM firmware_update WHERE rollout_id = %s "
            "AND notified_at IS NOT NULL ORDER BY notified_at",
            (rollout.id,),
        )
        times = [row[0].timestamp() for row in cursor.fetchall()]
    window = most_in_window(times, 60.0)
    # Notified devices have not ended their updates: the rollout is still running.
    stub.CancelFirmwareRollout(
        firmware_pb2.CancelFirmwareRolloutRequest(id=rollout.id), metadata=metadata, timeout=600
    )
    achieved = notified / elapsed * 60 if elapsed else 0.0
    met = (
        notified == due
        and window <= args.pace
        and largest_queue <= args.queue_limit
        and staged.device_count == args.devices
    )
    return {
        "devices": args.devices,
        "create_seconds": create_seconds,
        "create_updates": staged.device_count,
        "create_skipped": staged.counts.skipped,
        "due": due,
        "notified": notified,
        "notify_seconds": elapsed,
        "pace_per_minute": args.pace,
        "achieved_per_minute": achieved,
        "most_in_60s": window,
        "largest_queue": largest_queue,
        "queue_limit": args.queue_limit,
        "met": met,
    }


def most_in_window(times: list[float], seconds: float) -> int:
    """The most of the sorted ``times`` within any ``seconds``-long window (two pointers
    over the scheduler's own notification times, exact to the microsecond)."""
    best, first = 0, 0
    for last, moment in enumerate(times):
        while moment - times[first] >= seconds:
            first += 1
        best = max(best, last - first + 1)
    return best


def print_table(figures: dict, args: argparse.Namespace) -> None:
    print("\n| figure | value | target | met |")
    print("|---|---:|---:|---|")
    rows = [
        ("rollout created over devices", f"{figures['create_updates']:,}", f"{args.devices:,}"),
        ("  of them skipped (already on it / below minimum)", f"{figures['create_skipped']:,}", ""),
        ("CreateFirmwareRollout, seconds", f"{figures['create_seconds']:.2f}", ""),
        ("devices notified", f"{figures['notified']:,}", f"{figures['due']:,}"),
        ("  in seconds", f"{figures['notify_seconds']:.0f}", ""),
        (
            "achieved / configured pace",
            f"{figures['achieved_per_minute'] / figures['pace_per_minute']:.2f}",
            "",
        ),
        ("most notified in any 60 s", f"{figures['most_in_60s']:,}", f"<= {args.pace:,}"),
        ("largest message queue", f"{figures['largest_queue']}", f"<= {args.queue_limit}"),
    ]
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} | |")
    print(f"\nall targets met: {'yes' if figures['met'] else 'NO'}")


if __name__ == "__main__":
    sys.exit(main())
