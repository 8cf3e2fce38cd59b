"""Firmware packages and the firmware devices run.

- A package is a binary of one device type with a semantic version unique per type, a
  title, release notes and an optional minimum version a device must run to take it. Its
  bytes are stored as ``CHUNK_SIZE`` chunks in the database (every process and host serves
  every package), written in the package's one transaction: a failed or oversized upload
  leaves nothing behind.
- A download is a range of those bytes, read a few chunks at a time; admins download every
  package, other accounts the packages of a type they have a bound device of.
- What a device runs (``now_firmware_id``, ``firmware_version``) is what it last reported,
  or the package whose update it reported ``updated`` (``rollouts.py``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import peewee
import semver

from devicehub import catalog, validation
from devicehub.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    NotFound,
)
from devicehub.pagination import Page, paginate
from devicehub.security import Caller
from devicehub.storage.db import database
from devicehub.storage.errors import unique_violation
from devicehub.storage.models import (
    Binding,
    Device,
    DeviceType,
    FirmwareChunk,
    FirmwarePackage,
    FirmwareRollout,
    utcnow,
)
from devicehub.v1 import error_pb2 as reasons

log = logging.getLogger(__name__)

CHUNK_SIZE = 256 * 1024
"""Bytes per stored chunk: a download reads a few of them per message it sends."""

DEFAULT_PAGE_SIZE = 100
MAX_TITLE = 200
MAX_RELEASE_NOTES = 20_000
MAX_VERSION = 32


def download_path(package_id: int) -> str:
    return f"/api/device/firmware/packages/{package_id}/download"


def parse_version(name: str, text: str, *, required: bool = True) -> str:
    """``text`` trimmed, if it is a semantic version; InvalidArgument otherwise."""
    text = text.strip()
    if not text and not required:
        return ""
    if len(text) > MAX_VERSION:
        raise InvalidArgument(f"{name} must be at most {MAX_VERSION} characters")
    try:
        semver.Version.parse(text)
    except ValueError:
        raise InvalidArgument(
            f"{name} must be a semantic version such as 1.2.0 or 2.0.0-rc.1; got {text[:40]!r}"
        ) from None
    return text


# --- packages -----------------------------------------------------------------------


@dataclass
class PackageUpload:
    """A package being received: its checked metadata and the bytes so far (the servicer
    feeds it the request stream; ``store`` writes it all in one transaction)."""

    caller: Caller
    max_bytes: int
    device_type_id: int = 0
    version: str = ""
    title: str = ""
    release_notes: str = ""
    min_version: str = ""
    size: int = 0
    # What the client declared of the whole binary (None, "": nothing).
    expected_size: int | None = None
    expected_sha256: str = ""
    _digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    # The bytes as they will be stored: full chunks, and the start of the next one.
    _chunks: list[bytes] = field(default_factory=list)
    _tail: bytearray = field(default_factory=bytearray)

    def describe(
        self, device_type_id: int, version: str, title: str, release_notes: str, min_version: str
    ) -> None:
        catalog.require_admin(self.caller)
        self.device_type_id = validation.positive_id("device_type", device_type_id)
        self.version = parse_version("version", version)
        self.title = validation.text("title", title, max_length=MAX_TITLE)
        self.release_notes = validation.text(
            "release_notes", release_notes, max_length=MAX_RELEASE_NOTES, required=False
        )
        self.min_version = parse_version("min_version", min_version, required=False)
        if self.min_version and semver.Version.parse(self.min_version).compare(self.version) > 0:
            raise InvalidArgument("min_version must not be above version")

    def expect(self, size: int | None, sha256: str = "") -> None:
        """What the client declares of the whole binary: its size (REST: Content-Length),
        refused at once if over the limit, and its SHA-256. ``store`` checks both."""
        if size is not None:
            if size < 0:
                raise InvalidArgument("size_bytes must not be negative")
            if size > self.max_bytes:
                raise self._too_large()
            self.expected_size = size
        sha256 = sha256.strip().lower()
        if sha256 and (len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256)):
            raise InvalidArgument("sha256 must be 64 hex digits")
        self.expected_sha256 = sha256

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise self._too_large()
        if data:
            self._digest.update(data)
            self._tail += data
            while len(self._tail) >= CHUNK_SIZE:
                self._chunks.append(bytes(self._tail[:CHUNK_SIZE]))
                del self._tail[:CHUNK_SIZE]

    def _too_large(self) -> InvalidArgument:
        return InvalidArgument(
            f"Firmware package is larger than {self.max_bytes} bytes "
            "(DEVICEHUB_FIRMWARE_MAX_BYTES)",
            reasons.ERROR_REASON_FIRMWARE_TOO_LARGE,
        )

    def check_free(self) -> None:
        """Before the bytes arrive: the type exists and the version is free (checked again
        when stored, where the unique index decides a race)."""
        catalog.get_device_type(self.device_type_id)
        if _package_exists(self.device_type_id, self.version):
            raise _version_taken(self.version)

    def store(self, abandoned: Callable[[], bool] = lambda: False) -> FirmwarePackage:
        """Writes the package in one transaction, rolled back if ``abandoned()`` says,
        just before the commit, that the client gave the upload up."""
        if self.expected_size is not None and self.size != self.expected_size:
            raise InvalidArgument(
                f"The upload ended after {self.size} of its {self.expected_size} bytes: "
                "nothing was stored"
            )
        if self.size == 0:
            raise InvalidArgument("The firmware package is empty")
        if self.expected_sha256 and self._digest.hexdigest() != self.expected_sha256:
            raise InvalidArgument(
                f"The upload's SHA-256 is {self._digest.hexdigest()}, not the "
                f"{self.expected_sha256} declared: nothing was stored"
            )
        chunks = [*self._chunks, bytes(self._tail)] if self._tail else self._chunks
        with database.atomic():
            self.check_free()
            try:
                package = FirmwarePackage.create(
                    device_type=self.device_type_id,
                    version=self.version,
                    title=self.title,
                    release_notes=self.release_notes,
                    min_version=self.min_version,
                    size_bytes=self.size,
                    sha256=self._digest.hexdigest(),
                    chunk_size=CHUNK_SIZE,
                    created_by=self.caller.account_id,
                )
            except peewee.IntegrityError as error:
                if unique_violation(error) is not None:
                    raise _version_taken(self.version) from None
                raise
            rows = [
                {"package": package.id, "seq": seq, "data": chunk}
                for seq, chunk in enumerate(chunks)
            ]
            for start in range(0, len(rows), 16):
                FirmwareChunk.insert_many(rows[start : start + 16]).execute()
            if abandoned():
                raise InvalidArgument("The upload was canceled before its end: nothing was stored")
        return get_package(self.caller, package.id)


def _package_exists(device_type_id: int, version: str) -> bool:
    return (
        FirmwarePackage.select()
        .where(
            (FirmwarePackage.device_type == device_type_id) & (FirmwarePackage.version == version)
        )
        .exists()
    )


def _version_taken(version: str) -> AlreadyExists:
    return AlreadyExists(
        f"The device type already has firmware version {version}",
        reasons.ERROR_REASON_FIRMWARE_VERSION_TAKEN,
    )


def _packages() -> peewee.ModelSelect[FirmwarePackage]:
    return FirmwarePackage.select(FirmwarePackage, DeviceType).join(DeviceType)


def find_package(package_id: int) -> FirmwarePackage:
    package = _packages().where(FirmwarePackage.id == package_id).first()
    if package is None:
        raise NotFound(
            "Firmware package not found", reasons.ERROR_REASON_FIRMWARE_PACKAGE_NOT_FOUND
        )
    return package


def page_size_or_default(page_size: int) -> int:
    """A list's page size: 0 asks for the default page (a rollout lists 100,000 updates)."""
    return DEFAULT_PAGE_SIZE if page_size == 0 else page_size


def list_packages(
    caller: Caller, device_type_id: int = 0, page_size: int = 0, page_token: str = ""
) -> Page[FirmwarePackage]:
    catalog.require_admin(caller)
    query = _packages()
    if device_type_id:
        query = query.where(FirmwarePackage.device_type == device_type_id)
    return paginate(query, FirmwarePackage, page_size_or_default(page_size), page_token)


def get_package(caller: Caller, package_id: int) -> FirmwarePackage:
    catalog.require_admin(caller)
    return find_package(package_id)


def delete_package(caller: Caller, package_id: int) -> None:
    catalog.require_admin(caller)
    with database.atomic():
        package = find_package(package_id)
        used = (
            FirmwareRollout.select().where(FirmwareRollout.package == package_id).exists()
            or Device.select().where(Device.now_firmware_id == package_id).exists()
        )
        if used:
            raise Conflict(
                "The firmware package is used by a rollout or installed on devices",
                reasons.ERROR_REASON_FIRMWARE_PACKAGE_IN_USE,
            )
        package.delete_instance()


@dataclass(frozen=True)
class Download:
    """Bytes ``start`` up to (not including) ``end`` of ``package``."""

    package: FirmwarePackage
    start: int
    end: int

    @property
    def partial(self) -> bool:
        return self.start > 0 or self.end < self.package.size_bytes

    def within(self, offset: int, length: int = 0) -> Download:
        """The part from ``offset`` (``length`` bytes; 0: to the end); a range that starts
        at or past the end cannot be satisfied."""
        size = self.package.size_bytes
        if offset < 0 or length < 0:
            raise InvalidArgument("offset and length must not be negative")
        if offset >= size:
            raise InvalidArgument(
                f"offset {offset} is not below the package's size {size}",
                reasons.ERROR_REASON_RANGE_NOT_SATISFIABLE,
            )
        return Download(self.package, offset, size if length == 0 else min(size, offset + length))


def open_download(caller: Caller, package_id: int, offset: int = 0, length: int = 0) -> Download:
    """The package, if the caller may download it (an admin, or an account with a bound
    device of its type: 404 to anyone else), and the range asked for."""
    package = find_package(package_id)
    if not caller.is_admin:
        bound_of_type = (
            Binding.select()
            .join(Device)
            .where(
                (Binding.account == caller.account_id)
                & (Device.device_type == package.device_type_id)
            )
            .exists()
        )
        if not bound_of_type:
            raise NotFound(
                "Firmware package not found", reasons.ERROR_REASON_FIRMWARE_PACKAGE_NOT_FOUND
            )
    return Download(package, 0, package.size_bytes).within(offset, length)


def read_bytes(package_id: int, chunk_size: int, start: int, end: int) -> bytes:
    """Bytes ``start`` up to ``end`` of a package, from the chunks that hold them."""
    first, last = start // chunk_size, (end - 1) // chunk_size
    chunks = (
        FirmwareChunk.select(FirmwareChunk.seq, FirmwareChunk.data)
        .where(
            (FirmwareChunk.package == package_id)
            & (FirmwareChunk.seq >= first)
            & (FirmwareChunk.seq <= last)
        )
        .order_by(FirmwareChunk.seq)
    )
    data = b"".join(bytes(chunk.data) for chunk in chunks)
    offset = start - first * chunk_size
    return data[offset : offset + (end - start)]


def download_pieces(download: Download, piece: int = 4 * CHUNK_SIZE) -> Iterator[tuple[int, int]]:
    """The (start, end) ranges a download is sent in, each at most ``piece`` bytes and
    aligned to the stored chunks."""
    position = download.start
    chunk = download.package.chunk_size
    while position < download.end:
        boundary = (position // chunk) * chunk + max(chunk, piece - piece % chunk)
        stop = min(download.end, boundary)
        yield position, stop
        position = stop


# --- installed version -----------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    device_id: int
    package_id: int
    version: str


def report_installed(
    caller: Caller, device_id: int, version: str, package_id: int = 0
) -> Installed:
    """Records what a device runs (its bound account or an admin)."""
    version = validation.text("version", version, max_length=MAX_VERSION)
    if not version.isprintable():
        raise InvalidArgument("version must be printable characters")
    with database.atomic():
        device = catalog.get_device(device_id, caller)
        if package_id:
            package = FirmwarePackage.get_or_none(FirmwarePackage.id == package_id)
            if package is None or package.device_type_id != device.device_type_id:
                raise InvalidArgument(
                    "package_id names no firmware package of the device's type",
                    reasons.ERROR_REASON_FIRMWARE_PACKAGE_NOT_FOUND,
                )
            if package.version != version:
                raise InvalidArgument(
                    f"package {package_id} is version {package.version}, not {version}"
                )
        else:
            found = FirmwarePackage.get_or_none(
                (FirmwarePackage.device_type == device.device_type_id)
                & (FirmwarePackage.version == version)
            )
            package_id = found.id if found is not None else 0
        set_installed(device_id, package_id, version)
    return Installed(device_id, package_id, version)


def get_installed(caller: Caller, device_id: int) -> Installed:
    device = catalog.get_device(device_id, caller)
    return Installed(device.id, device.now_firmware_id, device.firmware_version)


def set_installed(device_id: int, package_id: int, version: str) -> None:
    Device.update(now_firmware_id=package_id, firmware_version=version, updated_at=utcnow()).where(
        Device.id == device_id
    ).execute()
