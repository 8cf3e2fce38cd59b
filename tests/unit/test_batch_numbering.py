"""How ``batch_create`` numbers a batch (devicehub.catalog): consecutive serial numbers of
the start serial's width, and each device's MAC address derived from its serial number
(``mac_prefix`` followed by the serial in hex), so MACs are unique and reproducible."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devicehub import catalog, validation
from devicehub.errors import InvalidArgument


@pytest.mark.parametrize(
    ("prefix", "serial", "mac"),
    [
        ([0x00, 0x11, 0x22], 1, "00:11:22:00:00:01"),
        ([0x00, 0x11, 0x22], 0x0A0B0C, "00:11:22:0A:0B:0C"),
        ([0xAA], 0, "AA:00:00:00:00:00"),
        ([0xAA], 2**40 - 1, "AA:FF:FF:FF:FF:FF"),
        ([1, 2, 3, 4, 5], 255, "01:02:03:04:05:FF"),
    ],
)
def test_mac_is_the_prefix_then_the_serial_in_hex(prefix, serial, mac):
    assert catalog.mac_for_serial(prefix, serial) == mac


def test_a_serial_beyond_the_free_octets_has_no_mac():
    with pytest.raises(OverflowError):
        catalog.mac_for_serial([1, 2, 3, 4, 5], 256)


@st.composite
def prefix_and_serials(draw) -> tuple[list[int], int, int]:
    prefix = draw(st.lists(st.integers(0, 255), min_size=1, max_size=5))
    capacity = 1 << (8 * (6 - len(prefix)))
    first, second = draw(
        st.lists(st.integers(0, capacity - 1), min_size=2, max_size=2, unique=True)
    )
    return prefix, first, second


@given(prefix_and_serials())
def test_every_mac_is_a_valid_normal_mac_of_its_prefix_and_distinct_per_serial(drawn):
    prefix, serial, other = drawn
    mac = catalog.mac_for_serial(prefix, serial)
    assert validation.mac_address("mac_address", mac) == mac
    octets = [int(octet, 16) for octet in mac.split(":")]
    assert octets[: len(prefix)] == prefix
    assert int.from_bytes(bytes(octets[len(prefix) :]), "big") == serial
    assert catalog.mac_for_serial(prefix, other) != mac


@pytest.mark.parametrize(
    ("start", "count", "serials"),
    [
        ("00001", 3, ["00001", "00002", "00003"]),
        ("0099", 2, ["0099", "0100"]),
        ("7", 3, ["7", "8", "9"]),
        (" 001 ", 1, ["001"]),
        ("0" * catalog.MAX_SERIAL_LENGTH, 1, ["0" * catalog.MAX_SERIAL_LENGTH]),
    ],
)
def test_serials_are_consecutive_and_keep_the_start_width(start, count, serials):
    assert catalog.consecutive_serials(start, count) == serials


def refusal(start: str, count: int) -> str:
    with pytest.raises(InvalidArgument) as raised:
        catalog.consecutive_serials(start, count)
    return raised.value.message


def test_serials_that_outgrow_the_width_are_refused():
    assert refusal("99", 2) == "2 serial numbers from 99 exceed 2 digits"
    assert refusal("9998", 3) == "3 serial numbers from 9998 exceed 4 digits"
    assert catalog.consecutive_serials("09998", 3)[-1] == "10000"  # a leading zero leaves room


@pytest.mark.parametrize("start", ["", "A001", "-1", "1.0", "²", "１２", "0 1"])
def test_start_serial_must_be_ascii_digits(start):
    assert refusal(start, 1) == "start_serial must be digits only, e.g. 00001"


def test_start_serial_has_a_length_limit():
    message = refusal("0" * (catalog.MAX_SERIAL_LENGTH + 1), 1)
    assert message == f"start_serial must be at most {catalog.MAX_SERIAL_LENGTH} digits"
