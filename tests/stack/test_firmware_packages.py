"""FirmwareService packages: uploads (a REST body, a gRPC stream), the package limit,
downloads (whole, ranged, interrupted and resumed), who may download, list/get/delete and
what keeps a package or a device type, and the installed version a device reports, as the
home screen shows it."""

from __future__ import annotations

import hashlib
import threading

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from devicehub.testing.stack import Stack
from devicehub.v1 import firmware_pb2, firmware_pb2_grpc

from api_client import create_type, lux_setup, metadata, new_device, query_database
from bound_accounts import bind
from firmware_setup import (
    PACKAGES,
    ROLLOUTS,
    firmware_bytes,
    fleet,
    upload_grpc,
    upload_rest,
)
from stack_settings import FIRMWARE_MAX_BYTES

STORAGE_CHUNK = 256 * 1024  # the server's stored chunk (firmware.CHUNK_SIZE)
PACKAGE_KEYS = {
    "id",
    "device_type",
    "device_type_name",
    "version",
    "title",
    "release_notes",
    "min_version",
    "size_bytes",
    "sha256",
    "download_path",
    "created_at",
}
TOO_LARGE_MESSAGE = (
    f"Firmware package is larger than {FIRMWARE_MAX_BYTES} bytes (DEVICEHUB_FIRMWARE_MAX_BYTES)"
)
PACKAGE_NOT_FOUND = "Firmware package not found"
INVALID_TOKEN = "Could not validate credentials"
LUX = "/api/v1/lux/device"


# --- helpers -----------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stub_for(stack: Stack) -> firmware_pb2_grpc.FirmwareServiceStub:
    return firmware_pb2_grpc.FirmwareServiceStub(stack.channel())


def error_body(response, status: int, code: str, message: str | None = None) -> dict:
    """The documented device-module error: ``status`` with ``code`` (and ``message``)."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"status", "message", "code"}, body
    assert (body["status"], body["code"]) == ("error", code), body
    if message is not None:
        assert body["message"] == message, body
    return body


def grpc_error(
    error: grpc.RpcError, code: grpc.StatusCode, reason: str, message: str | None = None
) -> None:
    """A rich gRPC status: ``code``, one ``ErrorInfo`` naming ``reason``."""
    assert error.code() == code, (error.code(), error.details())
    if message is not None:
        assert error.details() == message
    status = rpc_status.from_call(error)
    assert status is not None, "no grpc-status-details-bin trailer"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == (reason, "devicehub")


def uploaded(response) -> dict:
    assert response.status_code == 200, response.text[:500]
    return response.json()


def download_rest(stack: Stack, token: str | None, package_id: int, **headers: str):
    return stack.request("GET", f"{PACKAGES}/{package_id}/download", token, headers=headers)


def download_grpc(
    stack: Stack, token: str, package_id: int, offset: int = 0, length: int = 0
) -> bytes:
    messages = stub_for(stack).DownloadFirmwarePackage(
        firmware_pb2.DownloadFirmwarePackageRequest(id=package_id, offset=offset, length=length),
        metadata=metadata(token),
        timeout=60,
    )
    pieces = []
    for message in messages:
        assert message.content_type == "application/octet-stream"
        pieces.append(message.data)
    return b"".join(pieces)


def stream_upload(
    stack: Stack, token: str, first: firmware_pb2.UploadFirmwarePackageRequest, chunks: list
) -> firmware_pb2.FirmwarePackage:
    """Uploads ``first`` (which may carry bytes) and then one message per chunk."""

    def requests():
        yield first
        for chunk in chunks:
            request = firmware_pb2.UploadFirmwarePackageRequest()
            request.data.data = chunk
            yield request

    return stub_for(stack).UploadFirmwarePackage(requests(), metadata=metadata(token), timeout=60)


def versions_of(stack: Stack, device_type: int) -> list[str]:
    response = stack.request(
        "GET", PACKAGES, stack.admin_token, params={"device_type": device_type}
    )
    assert response.status_code == 200, response.text
    return [package["version"] for package in response.json()]


def stored_chunks(stack: Stack, device_type: int) -> int:
    """Chunk rows of the type's packages, straight from the database."""
    rows = query_database(
        stack,
        "SELECT COUNT(*) FROM firmware_chunk c JOIN firmware_package p ON p.id = c.package_id"
        " WHERE p.device_type_id = ?",
        (device_type,),
    )
    return rows[0][0]


def report_rest(stack: Stack, token: str, device_id: int, version: str, package_id: int = 0):
    return stack.request(
        "POST",
        f"/api/device/firmware/devices/{device_id}/installed",
        token,
        json={"version": version, "package_id": package_id},
    )


def home_row(stack: Stack, token: str, device_id: int) -> dict:
    response = stack.request("GET", f"{LUX}/get-all-device", token)
    assert response.status_code == 200, response.text
    rows = [row for row in response.json() if row["id"] == device_id]
    assert len(rows) == 1, response.json()
    return rows[0]


def child_device(stack: Stack, token: str, child_id: int) -> dict:
    response = stack.request("GET", f"{LUX}/child-device", token, params={"real_user_id": child_id})
    assert response.status_code == 200, response.text
    return response.json()


# --- upload ------------------------------------------------------------------------


def test_rest_upload_computes_size_and_sha256_and_serves_the_bytes(stack, admin):
    """A REST body (with runs of zero bytes) becomes a package whose size, SHA-256 and
    download path are the server's own, and whose download is exactly those bytes."""
    device_type = create_type(stack, admin, name="Lux 2")
    data = firmware_bytes(300_001, seed=1) + bytes(5000) + firmware_bytes(7, seed=2)
    body = uploaded(
        upload_rest(
            stack,
            admin,
            device_type["id"],
            "1.2.0",
            data,
            title="Quieter fan",
            release_notes="Fan curve\nand 静音",
            min_version="1.0.0",
        )
    )
    assert set(body) == PACKAGE_KEYS
    assert body["id"] > 0
    assert {key: body[key] for key in PACKAGE_KEYS - {"id", "created_at"}} == {
        "device_type": device_type["id"],
        "device_type_name": "Lux 2",
        "version": "1.2.0",
        "title": "Quieter fan",
        "release_notes": "Fan curve\nand 静音",
        "min_version": "1.0.0",
        "size_bytes": len(data),
        "sha256": sha256(data),
        "download_path": f"{PACKAGES}/{body['id']}/download",
    }
    assert body["created_at"].endswith("Z")
    got = stack.request("GET", f"{PACKAGES}/{body['id']}", admin)
    assert got.status_code == 200 and got.json() == body
    download = stack.request("GET", body["download_path"], admin)
    assert download.status_code == 200
    assert sha256(download.content) == sha256(data)


@pytest.mark.parametrize(
    "chunk",
    [4099, 65536, STORAGE_CHUNK - 1, STORAGE_CHUNK, STORAGE_CHUNK + 1, 700_001],
)
def test_grpc_streamed_upload_in_any_chunk_size_stores_the_exact_bytes(stack, admin, chunk):
    """Client-streamed chunks that do or do not align with the stored chunks give the
    same package: size, SHA-256, and the bytes served over gRPC and REST."""
    device_type = create_type(stack, admin)
    data = firmware_bytes(700_001, seed=chunk)
    package = upload_grpc(stack, admin, device_type["id"], "2.0.0-rc.1", data, chunk=chunk)
    assert (package.size_bytes, package.sha256) == (len(data), sha256(data))
    assert (package.device_type, package.version, package.title) == (
        device_type["id"],
        "2.0.0-rc.1",
        "build 2.0.0-rc.1",
    )
    assert package.device_type_name == device_type["name"]
    assert package.download_path == f"{PACKAGES}/{package.id}/download"
    assert stored_chunks(stack, device_type["id"]) == 3  # ceil(700001 / 256 KiB)
    assert download_grpc(stack, admin, package.id) == data
    assert sha256(download_rest(stack, admin, package.id).content) == sha256(data)


def test_grpc_upload_may_carry_bytes_in_its_first_message(stack, admin):
    """The first message names the package and may hold the first bytes."""
    device_type = create_type(stack, admin)
    data = firmware_bytes(400_000, seed=3)
    first = firmware_pb2.UploadFirmwarePackageRequest(
        device_type=device_type["id"], version="3.1.4", title="pi"
    )
    first.data.data = data[:1000]
    package = stream_upload(stack, admin, first, [data[1000:200_000], b"", data[200_000:]])
    assert (package.size_bytes, package.sha256) == (len(data), sha256(data))
    assert download_grpc(stack, admin, package.id) == data


def test_a_binary_of_zero_bytes_round_trips(stack, admin):
    """A binary made only of NUL bytes is stored and served unchanged, both ways."""
    device_type = create_type(stack, admin)
    zeros = bytes(STORAGE_CHUNK + 17)
    over_rest = uploaded(upload_rest(stack, admin, device_type["id"], "0.0.1", zeros))
    over_grpc = upload_grpc(stack, admin, device_type["id"], "0.0.2", zeros, chunk=100_000)
    for package_id, size, digest in (
        (over_rest["id"], over_rest["size_bytes"], over_rest["sha256"]),
        (over_grpc.id, over_grpc.size_bytes, over_grpc.sha256),
    ):
        assert (size, digest) == (len(zeros), sha256(zeros))
        assert download_rest(stack, admin, package_id).content == zeros
        assert download_grpc(stack, admin, package_id) == zeros


BAD_METADATA = [
    (
        {"version": "1.2"},
        "version must be a semantic version such as 1.2.0 or 2.0.0-rc.1; got '1.2'",
    ),
    ({"version": ""}, "version must be a semantic version such as 1.2.0 or 2.0.0-rc.1; got ''"),
    (
        {"min_version": "v1"},
        "min_version must be a semantic version such as 1.2.0 or 2.0.0-rc.1; got 'v1'",
    ),
    ({"version": "1.0.0", "min_version": "1.0.1"}, "min_version must not be above version"),
    ({"title": ""}, "title is required"),
    ({"title": "   "}, "title is required"),
    ({"title": "t" * 201}, "title must be at most 200 characters"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_METADATA)
def test_upload_metadata_is_checked_on_both_transports(stack, admin, fields, message):
    """Bad metadata is a 400 / INVALID_ARGUMENT naming the field, and stores nothing."""
    device_type = create_type(stack, admin)
    data = firmware_bytes(1000)
    query = {"version": "1.0.0", "title": "ok", **fields}
    version = query.pop("version")
    response = upload_rest(stack, admin, device_type["id"], version, data, **query)
    error_body(response, 400, "INVALID_ARGUMENT", message)
    first = firmware_pb2.UploadFirmwarePackageRequest(
        device_type=device_type["id"], version=version, **query
    )
    with pytest.raises(grpc.RpcError) as error:
        stream_upload(stack, admin, first, [data])
    grpc_error(error.value, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", message)
    assert versions_of(stack, device_type["id"]) == []


def test_release_notes_over_their_limit_are_refused_over_grpc(stack, admin):
    device_type = create_type(stack, admin)
    first = firmware_pb2.UploadFirmwarePackageRequest(
        device_type=device_type["id"], version="1.0.0", title="t", release_notes="n" * 20_001
    )
    with pytest.raises(grpc.RpcError) as error:
        stream_upload(stack, admin, first, [b"firmware"])
    grpc_error(
        error.value,
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "release_notes must be at most 20000 characters",
    )
    notes = "静" * 20_000
    first.release_notes = notes
    package = stream_upload(stack, admin, first, [b"firmware"])
    assert package.release_notes == notes


def test_rest_upload_takes_release_notes_up_to_their_limit(stack, admin):
    """Release notes of 20000 characters (their documented limit) in the query string: a
    long URL (before, a URL over about 8 KiB outgrew the gRPC server's default metadata
    limit and came back 429)."""
    device_type = create_type(stack, admin)
    notes = "n" * 20_000
    package = uploaded(
        upload_rest(stack, admin, device_type["id"], "1.0.0", b"fw", release_notes=notes)
    )
    assert package["release_notes"] == notes


def test_upload_for_an_unknown_device_type_is_404(stack, admin):
    response = upload_rest(stack, admin, 987_654_321, "1.0.0", b"firmware")
    error_body(response, 404, "DEVICE_TYPE_NOT_FOUND", "Device type not found")
    with pytest.raises(grpc.RpcError) as error:
        upload_grpc(stack, admin, 987_654_321, "1.0.0", b"firmware")
    grpc_error(
        error.value, grpc.StatusCode.NOT_FOUND, "DEVICE_TYPE_NOT_FOUND", "Device type not found"
    )
    missing_type = upload_rest(stack, admin, 0, "1.0.0", b"firmware")
    error_body(
        missing_type, 400, "INVALID_ARGUMENT", "device_type is required and must be a positive id"
    )


def test_an_empty_upload_is_400(stack, admin):
    """An empty REST body, a stream with only its first message, and a stream with no
    message at all are refused and store nothing."""
    device_type = create_type(stack, admin)
    response = upload_rest(stack, admin, device_type["id"], "1.0.0", b"")
    error_body(response, 400, "INVALID_ARGUMENT", "The firmware package is empty")
    first = firmware_pb2.UploadFirmwarePackageRequest(
        device_type=device_type["id"], version="1.0.0", title="t"
    )
    with pytest.raises(grpc.RpcError) as error:
        stream_upload(stack, admin, first, [])
    grpc_error(
        error.value,
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "The firmware package is empty",
    )
    with pytest.raises(grpc.RpcError) as error:
        stub_for(stack).UploadFirmwarePackage(iter(()), metadata=metadata(admin), timeout=30)
    grpc_error(
        error.value,
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "The upload is empty: its first message names the package",
    )
    assert versions_of(stack, device_type["id"]) == []


def test_a_version_is_unique_per_device_type(stack, admin):
    """The same version again for a type is 409 FIRMWARE_VERSION_TAKEN on both transports
    (the first package is untouched); the same version for another type is fine."""
    device_type, other_type = create_type(stack, admin), create_type(stack, admin)
    data = firmware_bytes(2000, seed=4)
    first = uploaded(upload_rest(stack, admin, device_type["id"], "1.0.0", data))
    taken = "The device type already has firmware version 1.0.0"
    again = upload_rest(stack, admin, device_type["id"], "1.0.0", firmware_bytes(10, seed=5))
    error_body(again, 409, "FIRMWARE_VERSION_TAKEN", taken)
    with pytest.raises(grpc.RpcError) as error:
        upload_grpc(stack, admin, device_type["id"], "1.0.0", firmware_bytes(10, seed=5))
    grpc_error(error.value, grpc.StatusCode.ALREADY_EXISTS, "FIRMWARE_VERSION_TAKEN", taken)
    other = upload_grpc(stack, admin, other_type["id"], "1.0.0", data)
    assert (other.device_type, other.version) == (other_type["id"], "1.0.0")
    assert versions_of(stack, device_type["id"]) == ["1.0.0"]
    assert download_rest(stack, admin, first["id"]).content == data


def test_simultaneous_uploads_of_one_version_store_one_package(stack, admin):
    """Two uploads of one version started together: one package is stored, the other
    upload is 409 FIRMWARE_VERSION_TAKEN, and the stored bytes are the winner's."""
    device_type = create_type(stack, admin)
    payloads = [firmware_bytes(300_000, seed=20), firmware_bytes(300_000, seed=21)]
    barrier = threading.Barrier(2)
    responses: list = [None, None]

    def upload(index: int) -> None:
        barrier.wait(timeout=30)
        responses[index] = upload_rest(stack, admin, device_type["id"], "1.0.0", payloads[index])

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 409], [r.text[:200] for r in responses]
    winner = next(i for i, r in enumerate(responses) if r.status_code == 200)
    error_body(
        responses[1 - winner],
        409,
        "FIRMWARE_VERSION_TAKEN",
        "The device type already has firmware version 1.0.0",
    )
    package = responses[winner].json()
    assert package["sha256"] == sha256(payloads[winner])
    assert download_rest(stack, admin, package["id"]).content == payloads[winner]
    assert versions_of(stack, device_type["id"]) == ["1.0.0"]
    assert stored_chunks(stack, device_type["id"]) == 2


def test_packages_are_for_admins_only(stack, admin, user):
    """A non-admin cannot upload, list, get or delete packages (403 / PERMISSION_DENIED)."""
    _, token = user
    device_type = create_type(stack, admin)
    package = uploaded(upload_rest(stack, admin, device_type["id"], "1.0.0", b"\x00firmware"))
    denied = "Only admins may change the device catalog"
    upload = upload_rest(stack, token, device_type["id"], "1.0.1", b"firmware")
    error_body(upload, 403, "PERMISSION_DENIED", denied)
    for method, path in (
        ("GET", PACKAGES),
        ("GET", f"{PACKAGES}/{package['id']}"),
        ("DELETE", f"{PACKAGES}/{package['id']}"),
    ):
        error_body(stack.request(method, path, token), 403, "PERMISSION_DENIED", denied)
    with pytest.raises(grpc.RpcError) as error:
        upload_grpc(stack, token, device_type["id"], "1.0.1", b"firmware")
    grpc_error(error.value, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", denied)
    assert versions_of(stack, device_type["id"]) == ["1.0.0"]


# --- limits --------------------------------------------------------------------------


def test_rest_upload_over_the_limit_is_413_and_stores_nothing(stack, admin):
    """One byte over DEVICEHUB_FIRMWARE_MAX_BYTES: 413 FIRMWARE_TOO_LARGE in the documented
    shape, no package and no chunk left; the version is still free for a legal upload."""
    device_type = create_type(stack, admin)
    response = upload_rest(stack, admin, device_type["id"], "1.0.0", bytes(FIRMWARE_MAX_BYTES + 1))
    error_body(response, 413, "FIRMWARE_TOO_LARGE", TOO_LARGE_MESSAGE)
    assert versions_of(stack, device_type["id"]) == []
    assert stored_chunks(stack, device_type["id"]) == 0
    data = firmware_bytes(10_000, seed=6)
    package = uploaded(upload_rest(stack, admin, device_type["id"], "1.0.0", data))
    assert (package["size_bytes"], package["sha256"]) == (len(data), sha256(data))
    assert versions_of(stack, device_type["id"]) == ["1.0.0"]


@pytest.mark.parametrize("chunk", [64 * 1024, 1_000_003])
def test_grpc_upload_over_the_limit_is_invalid_argument_and_stores_nothing(stack, admin, chunk):
    """A stream one byte over the limit ends INVALID_ARGUMENT with ErrorInfo reason
    FIRMWARE_TOO_LARGE; nothing is stored and the version can be uploaded after."""
    device_type = create_type(stack, admin)
    with pytest.raises(grpc.RpcError) as error:
        upload_grpc(
            stack, admin, device_type["id"], "1.0.0", bytes(FIRMWARE_MAX_BYTES + 1), chunk=chunk
        )
    grpc_error(
        error.value, grpc.StatusCode.INVALID_ARGUMENT, "FIRMWARE_TOO_LARGE", TOO_LARGE_MESSAGE
    )
    assert versions_of(stack, device_type["id"]) == []
    assert stored_chunks(stack, device_type["id"]) == 0
    data = firmware_bytes(5000, seed=7)
    package = upload_grpc(stack, admin, device_type["id"], "1.0.0", data)
    assert (package.size_bytes, package.sha256) == (len(data), sha256(data))


def test_a_package_exactly_at_the_limit_is_accepted_on_both_transports(stack, admin):
    device_type = create_type(stack, admin)
    data = firmware_bytes(FIRMWARE_MAX_BYTES, seed=8)
    over_rest = uploaded(upload_rest(stack, admin, device_type["id"], "1.0.0", data))
    assert (over_rest["size_bytes"], over_rest["sha256"]) == (FIRMWARE_MAX_BYTES, sha256(data))
    over_grpc = upload_grpc(stack, admin, device_type["id"], "1.0.1", data, chunk=300_000)
    assert (over_grpc.size_bytes, over_grpc.sha256) == (FIRMWARE_MAX_BYTES, sha256(data))
    assert sha256(download_grpc(stack, admin, over_rest["id"])) == sha256(data)
    assert sha256(download_rest(stack, admin, over_grpc.id).content) == sha256(data)


def test_rest_upload_beyond_the_edge_json_limit_streams_through(stack, admin):
    """A 5 MiB body is over the edge's 4 MiB JSON body limit but under the firmware
    limit: the upload route streams it to the server, which stores it whole."""
    device_type = create_type(stack, admin)
    data = firmware_bytes(5 * 1024 * 1024 + 3, seed=9)
    package = uploaded(upload_rest(stack, admin, device_type["id"], "1.0.0", data))
    assert (package["size_bytes"], package["sha256"]) == (len(data), sha256(data))
    assert sha256(download_rest(stack, admin, package["id"]).content) == sha256(data)


# --- download ------------------------------------------------------------------------


@pytest.fixture
def package(stack, admin) -> tuple[dict, bytes]:
    """A package of 3 stored chunks and a bit (the last one short), and its bytes."""
    device_type = create_type(stack, admin)
    data = firmware_bytes(3 * STORAGE_CHUNK + 12_345, seed=10)
    return uploaded(upload_rest(stack, admin, device_type["id"], "1.0.0", data)), data


def test_rest_download_is_a_plain_octet_stream_with_etag(stack, admin, package):
    body, data = package
    response = download_rest(stack, admin, body["id"])
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["etag"] == f'"{sha256(data)}"'
    assert response.headers["accept-ranges"] == "bytes"
    assert "content-range" not in response.headers


@pytest.mark.parametrize(
    ("offset", "length", "start", "end"),
    [
        (0, 0, 0, None),
        (1, 0, 1, None),
        (STORAGE_CHUNK - 1, 2, STORAGE_CHUNK - 1, STORAGE_CHUNK + 1),
        (STORAGE_CHUNK, STORAGE_CHUNK, STORAGE_CHUNK, 2 * STORAGE_CHUNK),
        (12, 10**9, 12, None),
        (-1, 0, -1, None),  # the last byte (offset = size - 1)
    ],
)
def test_grpc_download_streams_the_range_asked_for(
    stack, admin, package, offset, length, start, end
):
    body, data = package
    if offset == -1:
        offset = start = len(data) - 1
    assert download_grpc(stack, admin, body["id"], offset, length) == data[start:end]


def test_grpc_download_refuses_an_offset_at_or_past_the_end(stack, admin, package):
    body, data = package
    for offset in (len(data), len(data) + 1000):
        with pytest.raises(grpc.RpcError) as error:
            download_grpc(stack, admin, body["id"], offset)
        grpc_error(
            error.value,
            grpc.StatusCode.INVALID_ARGUMENT,
            "RANGE_NOT_SATISFIABLE",
            f"offset {offset} is not below the package's size {len(data)}",
        )
    with pytest.raises(grpc.RpcError) as error:
        download_grpc(stack, admin, body["id"], -5)
    grpc_error(
        error.value,
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "offset and length must not be negative",
    )


def _ranges(size: int) -> list[tuple[str, int, int]]:
    """(Range header, first byte, last byte) of a part of a body of ``size`` bytes."""
    return [
        ("bytes=1000-", 1000, size - 1),
        (f"bytes={size - 1}-", size - 1, size - 1),
        ("bytes=0-0", 0, 0),
        (f"bytes={STORAGE_CHUNK - 3}-{STORAGE_CHUNK + 2}", STORAGE_CHUNK - 3, STORAGE_CHUNK + 2),
        (f"bytes=100-{size + 5000}", 100, size - 1),  # a last byte past the end is clamped
        ("bytes=-500", size - 500, size - 1),
        ("BYTES = 7 - 9", 7, 9),
    ]


@pytest.mark.parametrize("case", range(7))
def test_rest_range_download_is_206_with_content_range(stack, admin, package, case):
    body, data = package
    header, first, last = _ranges(len(data))[case]
    response = download_rest(stack, admin, body["id"], Range=header)
    assert response.status_code == 206, (header, response.status_code, response.text[:200])
    assert response.headers["content-range"] == f"bytes {first}-{last}/{len(data)}"
    assert response.content == data[first : last + 1]
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["etag"] == f'"{sha256(data)}"'


@pytest.mark.parametrize("which", ["from_zero", "zero_to_last", "long_suffix"])
def test_rest_range_of_the_whole_body_is_200(stack, admin, package, which):
    """A range that covers every byte is answered as a plain download (RFC 9110 lets a
    server send the whole representation)."""
    body, data = package
    header = {
        "from_zero": "bytes=0-",
        "zero_to_last": f"bytes=0-{len(data) - 1}",
        "long_suffix": f"bytes=-{len(data) + 10}",
    }[which]
    response = download_rest(stack, admin, body["id"], Range=header)
    assert response.status_code == 200
    assert "content-range" not in response.headers
    assert response.content == data


@pytest.mark.parametrize("which", ["at_end", "past_end", "empty_suffix"])
def test_rest_range_past_the_end_is_416(stack, admin, package, which):
    body, data = package
    size = len(data)
    header, offset = {
        "at_end": (f"bytes={size}-", size),
        "past_end": (f"bytes={size + 10}-{size + 20}", size + 10),
        "empty_suffix": ("bytes=-0", size),
    }[which]
    response = download_rest(stack, admin, body["id"], Range=header)
    error_body(
        response,
        416,
        "RANGE_NOT_SATISFIABLE",
        f"offset {offset} is not below the package's size {size}",
    )


@pytest.mark.parametrize(
    "header", ["bytes=abc", "items=0-10", "bytes=50-20", "bytes=0-1,5-6", "bytes=", "0-10"]
)
def test_rest_unparsable_range_gives_the_whole_body(stack, admin, package, header):
    body, data = package
    response = download_rest(stack, admin, body["id"], Range=header)
    assert response.status_code == 200
    assert "content-range" not in response.headers
    assert sha256(response.content) == sha256(data)


def test_interrupted_rest_download_resumes_from_the_bytes_received(stack, admin):
    """A device reads part of a download, loses the connection, and resumes with
    ``Range: bytes=N-`` from the N bytes it has: the pieces make the exact package."""
    device_type = create_type(stack, admin)
    data = firmware_bytes(2 * 1024 * 1024 + 77, seed=11)
    package = uploaded(upload_rest(stack, admin, device_type["id"], "1.0.0", data))
    received = bytearray()
    with stack.request("GET", package["download_path"], admin, stream=True) as response:
        assert response.status_code == 200
        for piece in response.iter_content(chunk_size=16 * 1024):
            received += piece
            if len(received) >= 300_000:
                break
    assert 300_000 <= len(received) < len(data)
    assert bytes(received) == data[: len(received)]
    rest = download_rest(stack, admin, package["id"], Range=f"bytes={len(received)}-")
    assert rest.status_code == 206
    assert rest.headers["content-range"] == f"bytes {len(received)}-{len(data) - 1}/{len(data)}"
    assert sha256(bytes(received) + rest.content) == package["sha256"] == sha256(data)


def test_interrupted_grpc_download_resumes_from_an_offset(stack, admin):
    """A gRPC download canceled after its first message resumes with ``offset``; the
    pieces make the exact package."""
    device_type = create_type(stack, admin)
    data = firmware_bytes(3 * 1024 * 1024 + 5, seed=12)
    package = upload_grpc(stack, admin, device_type["id"], "1.0.0", data)
    call = stub_for(stack).DownloadFirmwarePackage(
        firmware_pb2.DownloadFirmwarePackageRequest(id=package.id),
        metadata=metadata(admin),
        timeout=60,
    )
    received = next(call).data
    call.cancel()
    assert 0 < len(received) < len(data)
    with pytest.raises(grpc.RpcError) as error:
        for _ in call:
            pass
    assert error.value.code() == grpc.StatusCode.CANCELLED
    rest = download_grpc(stack, admin, package.id, offset=len(received))
    assert len(received) + len(rest) == len(data)
    assert sha256(received + rest) == package.sha256 == sha256(data)


# --- who may download ------------------------------------------------------------------


def test_an_account_with_a_bound_device_of_the_type_may_download(stack, admin):
    """Besides admins, an account with a device of the package's type bound to it (bound
    through the device-interaction API, or connected to a child through the Lux API)
    downloads the package, over REST and gRPC; once unbound, it no longer sees it."""
    devices = fleet(stack, 1)
    data = firmware_bytes(50_000, seed=13)
    package = upload_grpc(stack, admin, devices.device_type["id"], "1.0.0", data)
    _, token = stack.new_user()
    device = stack.request("GET", f"/api/device/devices/{devices.device_ids[0]}/", admin).json()
    binding = bind(stack, token, device)
    assert download_rest(stack, token, package.id).content == data
    assert download_grpc(stack, token, package.id, offset=10) == data[10:]
    unbound = stack.request("DELETE", f"/api/device/user-devices/{binding['id']}", token)
    assert unbound.status_code == 204
    error_body(
        download_rest(stack, token, package.id),
        404,
        "FIRMWARE_PACKAGE_NOT_FOUND",
        PACKAGE_NOT_FOUND,
    )

    lux = lux_setup(stack)
    lux_package = uploaded(
        upload_rest(stack, admin, lux.device["device_type"], "1.0.0", data[:999])
    )
    ranged = download_rest(stack, lux.token, lux_package["id"], Range="bytes=-9")
    assert (ranged.status_code, ranged.content) == (206, data[990:999])
    assert download_grpc(stack, lux.token, lux_package["id"]) == data[:999]


def test_other_accounts_get_404_and_no_token_401(stack, admin):
    """An account without a bound device of the package's type (none at all, or one of
    another type) sees no package: 404 FIRMWARE_PACKAGE_NOT_FOUND; no token is 401."""
    device_type = create_type(stack, admin)
    package = upload_grpc(stack, admin, device_type["id"], "1.0.0", b"secret firmware")
    _, stranger = stack.new_user()
    _, other_type_owner = stack.new_user()
    bind(stack, other_type_owner, new_device(stack))
    for token in (stranger, other_type_owner):
        error_body(
            download_rest(stack, token, package.id),
            404,
            "FIRMWARE_PACKAGE_NOT_FOUND",
            PACKAGE_NOT_FOUND,
        )
        with pytest.raises(grpc.RpcError) as error:
            download_grpc(stack, token, package.id)
        grpc_error(
            error.value, grpc.StatusCode.NOT_FOUND, "FIRMWARE_PACKAGE_NOT_FOUND", PACKAGE_NOT_FOUND
        )
    error_body(download_rest(stack, None, package.id), 401, "UNAUTHENTICATED", INVALID_TOKEN)
    with pytest.raises(grpc.RpcError) as error:
        list(
            stub_for(stack).DownloadFirmwarePackage(
                firmware_pb2.DownloadFirmwarePackageRequest(id=package.id), timeout=30
            )
        )
    grpc_error(error.value, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


# --- list, get, delete --------------------------------------------------------------------


def test_list_packages_by_type_with_pages(stack, admin):
    """The list is a bare JSON array in id order; ``device_type`` filters it; a page
    shorter than the rest carries ``x-next-page-token``; gRPC pages alike."""
    device_type, other_type = create_type(stack, admin), create_type(stack, admin)
    ids = [
        uploaded(upload_rest(stack, admin, device_type["id"], v, v.encode()))["id"]
        for v in ("1.0.0", "1.1.0", "0.9.0")
    ]
    upload_rest(stack, admin, other_type["id"], "1.0.0", b"other")
    whole = stack.request("GET", PACKAGES, admin, params={"device_type": device_type["id"]})
    assert whole.status_code == 200
    assert isinstance(whole.json(), list)
    assert [p["id"] for p in whole.json()] == ids
    assert [p["version"] for p in whole.json()] == ["1.0.0", "1.1.0", "0.9.0"]
    assert all(set(p) == PACKAGE_KEYS for p in whole.json())
    assert "x-next-page-token" not in whole.headers
    first = stack.request(
        "GET", PACKAGES, admin, params={"device_type": device_type["id"], "page_size": 2}
    )
    assert [p["id"] for p in first.json()] == ids[:2]
    token = first.headers["x-next-page-token"]
    assert token
    second = stack.request(
        "GET",
        PACKAGES,
        admin,
        params={"device_type": device_type["id"], "page_size": 2, "page_token": token},
    )
    assert [p["id"] for p in second.json()] == ids[2:]
    assert "x-next-page-token" not in second.headers

    stub = stub_for(stack)
    page = stub.ListFirmwarePackages(
        firmware_pb2.ListFirmwarePackagesRequest(device_type=device_type["id"], page_size=2),
        metadata=metadata(admin),
    )
    assert [p.id for p in page.packages] == ids[:2] and page.next_page_token
    rest = stub.ListFirmwarePackages(
        firmware_pb2.ListFirmwarePackagesRequest(
            device_type=device_type["id"], page_size=2, page_token=page.next_page_token
        ),
        metadata=metadata(admin),
    )
    assert [p.id for p in rest.packages] == ids[2:] and rest.next_page_token == ""
    everything = stack.request("GET", PACKAGES, admin, params={"page_size": 1000}).json()
    assert {p["id"] for p in everything} >= set(ids)


def test_get_and_delete_a_package(stack, admin):
    """Get an unknown id is 404; delete is 204 with an empty body, then the package, its
    download and a second delete are 404 (REST and gRPC), and its chunks are gone."""
    device_type = create_type(stack, admin)
    missing = stack.request("GET", f"{PACKAGES}/987654321", admin)
    error_body(missing, 404, "FIRMWARE_PACKAGE_NOT_FOUND", PACKAGE_NOT_FOUND)
    stub = stub_for(stack)
    with pytest.raises(grpc.RpcError) as error:
        stub.GetFirmwarePackage(
            firmware_pb2.GetFirmwarePackageRequest(id=987654321), metadata=metadata(admin)
        )
    grpc_error(
        error.value, grpc.StatusCode.NOT_FOUND, "FIRMWARE_PACKAGE_NOT_FOUND", PACKAGE_NOT_FOUND
    )

    package = uploaded(
        upload_rest(stack, admin, device_type["id"], "1.0.0", firmware_bytes(600_000))
    )
    kept = upload_grpc(stack, admin, device_type["id"], "1.0.1", b"kept")
    assert stored_chunks(stack, device_type["id"]) == 4
    deleted = stack.request("DELETE", f"{PACKAGES}/{package['id']}", admin)
    assert (deleted.status_code, deleted.content) == (204, b"")
    for response in (
        stack.request("GET", f"{PACKAGES}/{package['id']}", admin),
        stack.request("DELETE", f"{PACKAGES}/{package['id']}", admin),
        download_rest(stack, admin, package["id"]),
    ):
        error_body(response, 404, "FIRMWARE_PACKAGE_NOT_FOUND", PACKAGE_NOT_FOUND)
    assert stored_chunks(stack, device_type["id"]) == 1
    stub.DeleteFirmwarePackage(
        firmware_pb2.DeleteFirmwarePackageRequest(id=kept.id), metadata=metadata(admin)
    )
    with pytest.raises(grpc.RpcError) as error:
        stub.DeleteFirmwarePackage(
            firmware_pb2.DeleteFirmwarePackageRequest(id=kept.id), metadata=metadata(admin)
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert versions_of(stack, device_type["id"]) == []
    assert stored_chunks(stack, device_type["id"]) == 0


IN_USE = "The firmware package is used by a rollout or installed on devices"


def test_a_package_a_rollout_uses_cannot_be_deleted(stack, admin):
    devices = fleet(stack, 2)
    package = uploaded(upload_rest(stack, admin, devices.device_type["id"], "1.0.0", b"fw"))
    rollout = stack.request("POST", ROLLOUTS, admin, json={"package_id": package["id"]})
    assert rollout.status_code == 200, rollout.text
    assert rollout.json()["device_count"] == 2
    response = stack.request("DELETE", f"{PACKAGES}/{package['id']}", admin)
    error_body(response, 409, "FIRMWARE_PACKAGE_IN_USE", IN_USE)
    with pytest.raises(grpc.RpcError) as error:
        stub_for(stack).DeleteFirmwarePackage(
            firmware_pb2.DeleteFirmwarePackageRequest(id=package["id"]), metadata=metadata(admin)
        )
    grpc_error(error.value, grpc.StatusCode.FAILED_PRECONDITION, "FIRMWARE_PACKAGE_IN_USE", IN_USE)
    assert download_rest(stack, admin, package["id"]).content == b"fw"


def test_a_package_installed_on_a_device_cannot_be_deleted(stack, admin):
    """While a device reports the package installed it is kept (409); once the device
    runs another version it can be deleted."""
    devices = fleet(stack, 1)
    device_id = devices.device_ids[0]
    package = uploaded(upload_rest(stack, admin, devices.device_type["id"], "1.0.0", b"fw"))
    installed = report_rest(stack, admin, device_id, "1.0.0")
    assert installed.json()["now_firmware_id"] == package["id"]
    response = stack.request("DELETE", f"{PACKAGES}/{package['id']}", admin)
    error_body(response, 409, "FIRMWARE_PACKAGE_IN_USE", IN_USE)
    assert report_rest(stack, admin, device_id, "0.9.0").json()["now_firmware_id"] == 0
    assert stack.request("DELETE", f"{PACKAGES}/{package['id']}", admin).status_code == 204


def test_a_device_type_with_packages_cannot_be_deleted(stack, admin):
    """A type with packages (and no batch or device) is kept: 409 DEVICE_TYPE_IN_USE; once
    its packages are deleted, so can it be."""
    device_type = create_type(stack, admin)
    package = upload_grpc(stack, admin, device_type["id"], "1.0.0", b"fw")
    path = f"/api/device/device-types/{device_type['id']}/"
    error_body(
        stack.request("DELETE", path, admin),
        409,
        "DEVICE_TYPE_IN_USE",
        "Device type still has firmware packages",
    )
    assert stack.request("GET", path, admin).json() == device_type
    assert stack.request("DELETE", f"{PACKAGES}/{package.id}", admin).status_code == 204
    assert stack.request("DELETE", path, admin).status_code == 204
    assert stack.request("GET", path, admin).status_code == 404


# --- the installed version ---------------------------------------------------------------


def test_bound_account_reports_the_installed_version_and_the_home_screen_shows_it(stack, lux):
    """A version matching a package of the device's type names that package; a version
    that matches none is stored as reported with id 0. get-all-device and child-device
    show the new values."""
    admin = stack.admin_token
    device_id, type_id = lux.device["id"], lux.device["device_type"]
    package = uploaded(upload_rest(stack, admin, type_id, "1.4.0", b"lux firmware"))
    other_type = create_type(stack, admin)
    upload_rest(stack, admin, other_type["id"], "2.0.0", b"other")  # not the device's type
    before = home_row(stack, lux.token, device_id)
    assert (before["now_firmware_id"], before["firmware_version"]) == (0, "")

    response = report_rest(stack, lux.token, device_id, "1.4.0")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "device_id": device_id,
        "now_firmware_id": package["id"],
        "firmware_version": "1.4.0",
    }
    row = home_row(stack, lux.token, device_id)
    assert (row["now_firmware_id"], row["firmware_version"]) == (package["id"], "1.4.0")
    assert child_device(stack, lux.token, lux.child["id"])["now_firmware_id"] == package["id"]

    for version in ("2.0.0", "v1.4-factory build"):
        response = report_rest(stack, lux.token, device_id, version)
        assert response.json() == {
            "device_id": device_id,
            "now_firmware_id": 0,
            "firmware_version": version,
        }
        row = home_row(stack, lux.token, device_id)
        assert (row["now_firmware_id"], row["firmware_version"]) == (0, version)
        assert child_device(stack, lux.token, lux.child["id"])["now_firmware_id"] == 0


def test_admin_reports_for_factory_tooling_over_grpc(stack, lux):
    """An admin reports for any device, naming the package or not; the owner's home
    screen shows it."""
    admin = stack.admin_token
    device_id, type_id = lux.device["id"], lux.device["device_type"]
    first = upload_grpc(stack, admin, type_id, "1.0.0", b"one")
    second = upload_grpc(stack, admin, type_id, "1.1.0", b"two")
    stub = stub_for(stack)
    installed = stub.ReportFirmware(
        firmware_pb2.ReportFirmwareRequest(
            device_id=device_id, version="1.1.0", package_id=second.id
        ),
        metadata=metadata(admin),
    )
    assert (installed.device_id, installed.now_firmware_id, installed.firmware_version) == (
        device_id,
        second.id,
        "1.1.0",
    )
    row = home_row(stack, lux.token, device_id)
    assert (row["now_firmware_id"], row["firmware_version"]) == (second.id, "1.1.0")
    installed = stub.ReportFirmware(
        firmware_pb2.ReportFirmwareRequest(device_id=device_id, version=" 1.0.0 "),
        metadata=metadata(lux.token),
    )
    assert (installed.now_firmware_id, installed.firmware_version) == (first.id, "1.0.0")
    assert child_device(stack, lux.token, lux.child["id"])["now_firmware_id"] == first.id


def test_refused_reports_leave_the_installed_version_unchanged(stack, lux):
    """A package of another type, an unknown package, a package of another version, an
    empty or unprintable version are 400; a foreign account and an unknown device are 404
    DEVICE_NOT_FOUND. The device keeps what it reported before."""
    admin = stack.admin_token
    device_id, type_id = lux.device["id"], lux.device["device_type"]
    package = uploaded(upload_rest(stack, admin, type_id, "1.0.0", b"fw"))
    foreign = uploaded(upload_rest(stack, admin, create_type(stack, admin)["id"], "1.0.0", b"x"))
    assert report_rest(stack, lux.token, device_id, "1.0.0").status_code == 200
    no_such_package = "package_id names no firmware package of the device's type"
    for version, package_id, code, message in (
        ("1.0.0", foreign["id"], "FIRMWARE_PACKAGE_NOT_FOUND", no_such_package),
        ("1.0.0", 987654321, "FIRMWARE_PACKAGE_NOT_FOUND", no_such_package),
        (
            "1.0.1",
            package["id"],
            "INVALID_ARGUMENT",
            f"package {package['id']} is version 1.0.0, not 1.0.1",
        ),
        ("", 0, "INVALID_ARGUMENT", "version is required"),
        ("1.0.0\x07", 0, "INVALID_ARGUMENT", "version must be printable characters"),
        ("1" * 33, 0, "INVALID_ARGUMENT", "version must be at most 32 characters"),
    ):
        response = report_rest(stack, lux.token, device_id, version, package_id)
        error_body(response, 400, code, message)
    _, stranger = stack.new_user()
    error_body(
        report_rest(stack, stranger, device_id, "9.9.9"),
        404,
        "DEVICE_NOT_FOUND",
        "Device not found",
    )
    error_body(
        report_rest(stack, admin, 987654321, "9.9.9"), 404, "DEVICE_NOT_FOUND", "Device not found"
    )
    with pytest.raises(grpc.RpcError) as error:
        stub_for(stack).ReportFirmware(
            firmware_pb2.ReportFirmwareRequest(device_id=device_id, version="9.9.9"),
            metadata=metadata(stranger),
        )
    grpc_error(error.value, grpc.StatusCode.NOT_FOUND, "DEVICE_NOT_FOUND", "Device not found")
    row = home_row(stack, lux.token, device_id)
    assert (row["now_firmware_id"], row["firmware_version"]) == (package["id"], "1.0.0")


def test_what_a_device_runs_is_read_back_by_its_account_and_admins(stack, lux):
    """GET .../installed (GetInstalledFirmware) answers what the device last reported: the
    device's own record, for factory and support tooling; strangers get 404."""
    admin = stack.admin_token
    device_id, type_id = lux.device["id"], lux.device["device_type"]
    path = f"/api/device/firmware/devices/{device_id}/installed"
    never = stack.request("GET", path, lux.token)
    assert never.status_code == 200, never.text
    assert never.json() == {"device_id": device_id, "now_firmware_id": 0, "firmware_version": ""}
    package = uploaded(upload_rest(stack, admin, type_id, "3.1.0", b"fw"))
    assert report_rest(stack, lux.token, device_id, "3.1.0").status_code == 200
    expected = {
        "device_id": device_id,
        "now_firmware_id": package["id"],
        "firmware_version": "3.1.0",
    }
    assert stack.request("GET", path, lux.token).json() == expected
    installed = stub_for(stack).GetInstalledFirmware(
        firmware_pb2.GetInstalledFirmwareRequest(device_id=device_id), metadata=metadata(admin)
    )
    assert (installed.device_id, installed.now_firmware_id, installed.firmware_version) == (
        device_id,
        package["id"],
        "3.1.0",
    )
    _, stranger = stack.new_user()
    error_body(stack.request("GET", path, stranger), 404, "DEVICE_NOT_FOUND", "Device not found")


def test_a_declared_size_and_sha256_are_checked_before_anything_is_stored(stack, admin):
    """Tooling declares the binary's size and SHA-256 in the first message (REST: the
    query string; its Content-Length is the size): bytes that disagree store nothing."""
    device_type = create_type(stack, admin)["id"]
    data = firmware_bytes(300_000)
    digest = hashlib.sha256(data).hexdigest()
    with pytest.raises(grpc.RpcError) as short:
        upload_grpc(stack, admin, device_type, "1.0.0", data, size_bytes=len(data) + 1)
    assert short.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ended after 300000 of its 300001 bytes" in short.value.details()
    with pytest.raises(grpc.RpcError) as wrong:
        upload_grpc(stack, admin, device_type, "1.0.0", data, sha256="0" * 64)
    assert "SHA-256 is " + digest in wrong.value.details()
    rest = upload_rest(stack, admin, device_type, "1.0.0", data, sha256="f" * 64)
    assert rest.status_code == 400 and rest.json()["code"] == "INVALID_ARGUMENT", rest.text
    assert stack.request("GET", PACKAGES, admin, params={"device_type": device_type}).json() == []
    package = upload_grpc(
        stack, admin, device_type, "1.0.0", data, size_bytes=len(data), sha256=digest.upper()
    )
    assert (package.size_bytes, package.sha256) == (len(data), digest)
    rest = upload_rest(stack, admin, device_type, "1.0.1", data, sha256=digest)
    assert rest.status_code == 200 and rest.json()["sha256"] == digest, rest.text
