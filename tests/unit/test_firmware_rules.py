"""The firmware rules that need no database: versions, skips, the update sequence, group
outcomes, group percentages, the notification pace, download ranges and upload chunking."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from devicehub import firmware, rollouts
from devicehub.api.rest_edge import content_range, requested_range
from devicehub.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from devicehub.security import Caller
from devicehub.v1 import error_pb2

ADMIN = Caller(account_id=1, is_admin=True, token_version=0)


def test_versions_must_be_semantic():
    assert firmware.parse_version("version", " 1.2.0 ") == "1.2.0"
    assert firmware.parse_version("version", "2.0.0-rc.1+build.5") == "2.0.0-rc.1+build.5"
    assert firmware.parse_version("min_version", "", required=False) == ""
    for bad in ("", "1.2", "v1.2.0", "1.2.0.0", "01.2.0", "x" * 40):
        with pytest.raises(InvalidArgument):
            firmware.parse_version("version", bad)


@pytest.mark.parametrize(
    ("installed", "min_version", "reason"),
    [
        ("1.0.0", "", ""),
        ("2.0.0", "", rollouts.SKIP_ALREADY_ON_VERSION),
        ("2.0.0+build.7", "", rollouts.SKIP_ALREADY_ON_VERSION),  # build metadata: same version
        ("", "", ""),  # never reported, no minimum: updated
        ("", "1.0.0", rollouts.SKIP_UNKNOWN_VERSION),
        ("vendor-7", "1.0.0", rollouts.SKIP_UNKNOWN_VERSION),
        ("0.9.9", "1.0.0", rollouts.SKIP_BELOW_MIN_VERSION),
        ("1.0.0-rc.1", "1.0.0", rollouts.SKIP_BELOW_MIN_VERSION),  # a pre-release is below
        ("1.0.0", "1.0.0", ""),
        ("3.0.0", "1.0.0", ""),  # a downgrade is allowed: the admin chose the package
    ],
)
def test_skip_reasons(installed, min_version, reason):
    assert rollouts.skip_reason(installed, "2.0.0", min_version) == reason


def test_the_update_sequence():
    for current, new in zip(rollouts.SEQUENCE[1:], rollouts.SEQUENCE[2:], strict=False):
        rollouts.check_transition(current, new)  # each next step is allowed
    for current in rollouts.SEQUENCE[1:-1]:
        rollouts.check_transition(current, "failed")
    refused = [
        ("notified", "verified"),  # a step skipped
        ("downloaded", "downloading"),  # backwards
        ("queued", "downloading"),  # not told yet
        ("queued", "failed"),
        ("updated", "failed"),  # ended
        ("failed", "downloading"),
        ("canceled", "updating"),
        ("skipped", "downloading"),
    ]
    for current, new in refused:
        with pytest.raises(FailedPrecondition) as caught:
            rollouts.check_transition(current, new)
        assert caught.value.reason == error_pb2.ERROR_REASON_FIRMWARE_TRANSITION_NOT_ALLOWED


def test_group_outcomes():
    outcome = rollouts.group_outcome
    assert outcome({"queued": 10}, 90, 10) == "running"
    assert outcome({"updated": 9, "updating": 1}, 90, 10) == "succeeded"
    assert outcome({"updated": 8, "updating": 2}, 90, 10) == "running"
    assert outcome({"updated": 8, "failed": 1, "updating": 1}, 90, 10) == "running"  # 10%: not over
    assert outcome({"updated": 7, "failed": 2, "updating": 1}, 90, 10) == "failed"  # 20% > 10%
    # Errors are judged first: a group over the error threshold fails even if it succeeded.
    assert outcome({"updated": 5, "failed": 5}, 50, 10) == "failed"
    # Skipped and canceled updates are not counted: 9 of 10 eligible updated.
    assert outcome({"updated": 9, "notified": 1, "skipped": 40, "canceled": 3}, 90, 10) == (
        "succeeded"
    )
    assert outcome({"skipped": 3}, 90, 10) == "succeeded"  # nothing to do
    assert outcome({}, 90, 10) == "succeeded"
    assert outcome({"failed": 1, "updated": 99}, 100, 0) == "failed"  # zero tolerance
    # Every update ended below the success threshold, within the error threshold: it can
    # neither succeed nor fail any more.
    assert outcome({"updated": 9, "failed": 1}, 100, 10) == "ended"
    assert outcome({"updated": 9, "failed": 1, "canceled": 5}, 100, 10) == "ended"
    assert outcome({"updated": 8, "failed": 1, "downloading": 1}, 100, 10) == "running"


def test_group_percents():
    assert rollouts.validate_group_percents([]) == [100]
    assert rollouts.validate_group_percents([1, 10, 100]) == [1, 10, 100]
    for bad in ([10, 10, 100], [50, 20, 100], [1, 10], [0, 100], [50, 101], [1] * 21):
        with pytest.raises(InvalidArgument):
            rollouts.validate_group_percents(bad)


def test_notification_budget_follows_the_pace():
    assert rollouts.notification_budget(10, 600, 0) == 10  # the turn's share
    assert rollouts.notification_budget(10, 600, 595) == 5  # what the minute leaves
    assert rollouts.notification_budget(10, 600, 600) == 0
    assert rollouts.notification_budget(10, 600, 700) == 0  # never negative


def test_the_pace_shares_out_the_time_that_passed():
    pace = rollouts.Pace(per_minute=600, tick=1.0)
    assert pace.share(1.0) == 10
    pace.spent(10)
    assert pace.share(1.3) == 13  # a slow turn: its share follows the clock
    pace.spent(13)
    # Below one device per turn, the credit adds up: 120 a minute at 0.2 s is one per 0.5 s.
    slow = rollouts.Pace(per_minute=120, tick=0.2)
    shares = []
    for _ in range(10):  # two seconds
        share = slow.share(0.2)
        slow.spent(share)
        shares.append(share)
    assert sum(shares) == 4 and max(shares) == 1
    # After a stall (no turn for a minute) at most five ticks' worth at once.
    stalled = rollouts.Pace(per_minute=600, tick=1.0)
    assert stalled.share(60.0) == 51
    # Nothing due for a long time (nothing spent): the credit does not grow without bound.
    idle = rollouts.Pace(per_minute=600, tick=1.0)
    for _ in range(100):
        idle.share(1.0)
    assert idle.share(1.0) == 51


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-", (0, 0)),
        ("bytes=100-", (100, 0)),
        ("bytes=100-199", (100, 100)),
        ("bytes=100-5000", (100, 4901)),  # past the end: trimmed by the download
        ("bytes=-300", (700, 0)),
        ("bytes=-5000", (0, 0)),
        ("bytes=-0", (1000, 0)),  # nothing: refused by the download (416)
        ("bytes=1000-", (1000, 0)),  # at the end: refused by the download (416)
        ("BYTES = 5-9", (5, 5)),
        ("", None),
        ("bytes=5", None),
        ("bytes=9-5", None),
        ("bytes=0-1,5-9", None),  # several ranges: the whole body
        ("items=0-5", None),
        ("bytes=a-5", None),
        ("bytes=١-٥", None),  # non-ASCII digits
    ],
)
def test_requested_range(header, expected):
    assert requested_range(header, 1000) == expected


def test_content_range():
    assert content_range(100, 200, 1000) == "bytes 100-199/1000"


def _package(size: int, chunk_size: int = 1024) -> firmware.Download:
    package = firmware.FirmwarePackage(id=1, size_bytes=size, chunk_size=chunk_size)
    return firmware.Download(package, 0, size)


def test_download_ranges_and_pieces():
    download = _package(10_000)
    assert not download.partial
    part = download.within(1500, 3000)
    assert (part.start, part.end, part.partial) == (1500, 4500, True)
    assert download.within(9000).end == 10_000
    with pytest.raises(InvalidArgument) as caught:
        download.within(10_000)
    assert caught.value.reason == error_pb2.ERROR_REASON_RANGE_NOT_SATISFIABLE
    with pytest.raises(InvalidArgument):
        download.within(-1)
    pieces = list(firmware.download_pieces(part, piece=2048))
    assert pieces[0][0] == 1500 and pieces[-1][1] == 4500
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    # Each piece ends on a stored chunk's boundary (or at the end): one read per piece.
    assert all(end % 1024 == 0 for _, end in pieces[:-1])
    assert all(end - start <= 2048 for start, end in pieces)


def test_an_upload_is_stored_in_full_chunks_with_its_checksum():
    upload = firmware.PackageUpload(ADMIN, max_bytes=1_000_000)
    upload.describe(3, "1.0.0", "title", "", "")
    data = bytes(range(256)) * 2000  # 512,000 bytes, zero bytes included
    for start in range(0, len(data), 70_001):  # pieces that align with nothing
        upload.add(data[start : start + 70_001])
    assert upload.size == len(data)
    assert upload._digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert [len(c) for c in upload._chunks] == [firmware.CHUNK_SIZE]
    assert b"".join(upload._chunks) + bytes(upload._tail) == data


def test_an_upload_over_the_limit_is_refused():
    upload = firmware.PackageUpload(ADMIN, max_bytes=1000)
    upload.describe(3, "1.0.0", "title", "", "")
    with pytest.raises(InvalidArgument) as announced:
        upload.expect(1001)  # a declared size (REST: Content-Length) is refused at once
    assert announced.value.reason == error_pb2.ERROR_REASON_FIRMWARE_TOO_LARGE
    upload.add(b"x" * 1000)  # exactly the limit
    with pytest.raises(InvalidArgument) as caught:
        upload.add(b"x")
    assert caught.value.reason == error_pb2.ERROR_REASON_FIRMWARE_TOO_LARGE


def test_only_admins_upload_and_metadata_is_checked():
    user = Caller(account_id=2, is_admin=False, token_version=0)
    with pytest.raises(PermissionDenied):
        firmware.PackageUpload(user, 1000).describe(3, "1.0.0", "t", "", "")
    with pytest.raises(InvalidArgument, match="min_version"):
        firmware.PackageUpload(ADMIN, 1000).describe(3, "1.0.0", "t", "", "1.1.0")
    with pytest.raises(InvalidArgument, match="title"):
        firmware.PackageUpload(ADMIN, 1000).describe(3, "1.0.0", "", "", "")
    with pytest.raises(InvalidArgument, match="device_type"):
        firmware.PackageUpload(ADMIN, 1000).describe(0, "1.0.0", "t", "", "")


def test_an_upload_that_ends_short_of_what_was_declared_is_refused():
    """A stream cut short (a canceled client ends it like a complete one) or bytes that
    hash otherwise than declared: refused before anything is written."""
    data = b"firmware" * 1000
    short = firmware.PackageUpload(ADMIN, max_bytes=1_000_000)
    short.describe(3, "1.0.0", "title", "", "")
    short.expect(len(data))
    short.add(data[:5000])
    with pytest.raises(InvalidArgument, match="ended after 5000 of its 8000 bytes"):
        short.store()
    wrong = firmware.PackageUpload(ADMIN, max_bytes=1_000_000)
    wrong.describe(3, "1.0.0", "title", "", "")
    wrong.expect(len(data), "ab" * 32)
    wrong.add(data)
    with pytest.raises(InvalidArgument, match="SHA-256 is"):
        wrong.store()
    for bad in ("xyz", "ab" * 31, "g" * 64):
        with pytest.raises(InvalidArgument, match="sha256"):
            firmware.PackageUpload(ADMIN, 1000).expect(None, bad)
    with pytest.raises(InvalidArgument, match="negative"):
        firmware.PackageUpload(ADMIN, 1000).expect(-1)
