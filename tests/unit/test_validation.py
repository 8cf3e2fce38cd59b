"""Field rules of devicehub.validation: every refusal is an InvalidArgument naming the field."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devicehub import validation
from devicehub.errors import InvalidArgument
from devicehub.v1 import error_pb2


def refusal(rule, *args, **kwargs) -> str:
    """The message of the InvalidArgument ``rule(*args)`` raises."""
    with pytest.raises(InvalidArgument) as raised:
        rule(*args, **kwargs)
    assert raised.value.reason == error_pb2.ERROR_REASON_INVALID_ARGUMENT
    return raised.value.message


@pytest.mark.parametrize("value", ["\x00", "a\x00", "\x00b", "name\x00with nul"])
def test_no_nul_refuses_a_nul_anywhere(value):
    assert refusal(validation.no_nul, "name", value) == "name must not contain NUL characters"


@pytest.mark.parametrize("value", ["", "plain", "智能音箱", "tab\tand\nnewline", "\x01"])
def test_no_nul_passes_every_other_text_unchanged(value):
    assert validation.no_nul("name", value) is value


@pytest.mark.parametrize(
    ("value", "number"), [("0", 0), ("42", 42), (" 7 ", 7), ("007", 7), ("2147483647", 2**31 - 1)]
)
def test_ascii_number_reads_trimmed_ascii_digits(value, number):
    assert validation.ascii_number("user_id", value) == number


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "-1",
        "+1",
        "1.0",
        "1e3",
        "1_000",
        "0x10",
        "²",  # str.isdigit() accepts it, int() does not
        "١٢",  # Arabic-Indic digits: int() would read 12
        "１２",  # full-width digits: int() would read 12
        "2147483648",  # one above the largest INTEGER id
        "9" * 21,  # refused by its length, before int() reads it
    ],
)
def test_ascii_number_refuses_anything_but_ascii_digits_within_the_maximum(value):
    message = refusal(validation.ascii_number, "user_id", value)
    assert message == f"user_id must be a number written 0-9, at most {validation.INT32_MAX}"


def test_ascii_number_maximum_is_inclusive_and_configurable():
    largest = str(validation.INT64_MAX)
    assert validation.ascii_number("id", largest, maximum=validation.INT64_MAX) == 2**63 - 1
    message = refusal(validation.ascii_number, "id", str(2**63), maximum=validation.INT64_MAX)
    assert message == f"id must be a number written 0-9, at most {2**63 - 1}"
    assert validation.ascii_number("id", "10", maximum=10) == 10
    assert "at most 10" in refusal(validation.ascii_number, "id", "11", maximum=10)


@given(st.integers(min_value=0, max_value=validation.INT64_MAX))
def test_ascii_number_reads_back_every_number_it_may_accept(number):
    assert validation.ascii_number("id", str(number), maximum=validation.INT64_MAX) == number


@given(st.text(max_size=30))
def test_ascii_number_accepts_exactly_the_trimmed_ascii_digit_strings(value):
    trimmed = value.strip()
    valid = trimmed.isascii() and trimmed.isdigit() and int(trimmed) <= validation.INT32_MAX
    if valid:
        assert validation.ascii_number("id", value) == int(trimmed)
    else:
        with pytest.raises(InvalidArgument):
            validation.ascii_number("id", value)


def test_text_is_trimmed_and_its_length_counts_characters():
    assert validation.text("name", "  Min  ", max_length=3) == "Min"
    assert validation.text("name", "智能音箱", max_length=4) == "智能音箱"
    message = refusal(validation.text, "name", "智能音箱!", max_length=4)
    assert message == "name must be at most 4 characters"


def test_text_required_or_optional():
    assert refusal(validation.text, "name", "   ", max_length=5) == "name is required"
    assert validation.text("description", "   ", max_length=5, required=False) == ""


def test_text_refuses_nul_before_trimming():
    message = refusal(validation.text, "name", "Min\x00", max_length=10)
    assert message == "name must not contain NUL characters"


@pytest.mark.parametrize("value", ["T1", "abc_DEF-123", "-", "_", " SPEAKER "])
def test_code_allows_letters_digits_underscore_and_dash(value):
    assert validation.code("code", value, max_length=20) == value.strip()


@pytest.mark.parametrize("value", ["a b", "a.b", "a/b", "é", "音箱", "a:b", "a\tb"])
def test_code_refuses_other_characters(value):
    message = refusal(validation.code, "code", value, max_length=20)
    assert message == "code may contain only letters, digits, '_' and '-'"


def test_code_keeps_the_text_rules():
    assert refusal(validation.code, "code", "", max_length=5) == "code is required"
    assert refusal(validation.code, "code", "ABCDEF", max_length=5) == (
        "code must be at most 5 characters"
    )


@pytest.mark.parametrize(
    ("value", "date"),
    [
        ("2015-03-01", dt.date(2015, 3, 1)),
        (" 2024-02-29 ", dt.date(2024, 2, 29)),
        ("0001-01-01", dt.date(1, 1, 1)),
    ],
)
def test_date_reads_yyyy_mm_dd(value, date):
    assert validation.date("birthdate", value) == date


@pytest.mark.parametrize(
    "value",
    [
        "2023-02-29",  # not a leap year
        "2023-02-30",
        "2023-13-01",
        "2023-00-10",
        "2023-1-01",
        "20230101",  # ISO 8601 basic format
        "2023-W01-1",  # ISO week date
        "2023-001",  # ISO ordinal date
        "2023/01/01",
        "01-01-2023",
        "２０２３-01-01",  # full-width digits
        "0000-01-01",
    ],
)
def test_date_refuses_anything_else(value):
    assert (
        refusal(validation.date, "birthdate", value)
        == "birthdate must be a date written YYYY-MM-DD"
    )


def test_date_is_required_and_short():
    assert refusal(validation.date, "birthdate", "") == "birthdate is required"
    message = refusal(validation.date, "birthdate", "2023-01-01T00:00")
    assert message == "birthdate must be at most 10 characters"


def test_positive_id():
    assert validation.positive_id("batch", 1) == 1
    for value in (0, -1):
        message = refusal(validation.positive_id, "batch", value)
        assert message == "batch is required and must be a positive id"


@pytest.mark.parametrize(
    ("value", "normal"),
    [
        ("00:11:22:33:44:55", "00:11:22:33:44:55"),
        ("aa:bb:cc:dd:ee:ff", "AA:BB:CC:DD:EE:FF"),
        ("aa-bb-cc-dd-ee-0f", "AA:BB:CC:DD:EE:0F"),
        ("00:11-22:33-44:55", "00:11:22:33:44:55"),
        (" 00:11:22:33:44:55 ", "00:11:22:33:44:55"),
    ],
)
def test_mac_address_is_normalised_to_upper_case_with_colons(value, normal):
    assert validation.mac_address("mac_address", value) == normal


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00:11:22:33:44",  # five octets
        "00:11:22:33:44:55:66",  # seven
        "001122334455",
        "00.11.22.33.44.55",
        "0:11:22:33:44:55",
        "000:11:22:33:44:55",
        "GG:11:22:33:44:55",
        "00:11:22:33:44:55:",
        "00::11:22:33:44:55",
        "00:11:22:33:44:55\n00:11:22:33:44:55",
    ],
)
def test_mac_address_refuses_anything_but_six_hex_octets(value):
    message = refusal(validation.mac_address, "mac_address", value)
    assert message == "mac_address must be six hex octets like 00:11:22:33:44:55"


@given(st.binary(min_size=6, max_size=6), st.sampled_from([":", "-"]), st.booleans())
def test_mac_address_accepts_every_six_octets_in_either_form(octets, separator, lower):
    written = separator.join(f"{octet:02x}" if lower else f"{octet:02X}" for octet in octets)
    normal = validation.mac_address("mac_address", written)
    assert normal == ":".join(f"{octet:02X}" for octet in octets)
    assert validation.mac_address("mac_address", normal) == normal


@pytest.mark.parametrize(
    ("value", "octets"),
    [
        ("00", [0]),
        ("0a:1B", [10, 27]),
        ("00-11-22", [0, 17, 34]),
        (" ff:ee:dd:cc:bb ", [255, 238, 221, 204, 187]),
    ],
)
def test_mac_prefix_is_one_to_five_octets(value, octets):
    assert validation.mac_prefix("mac_prefix", value) == octets


@pytest.mark.parametrize(
    "value", ["", "0", "000", "00:", ":00", "00:11:22:33:44:55", "zz", "00 11"]
)
def test_mac_prefix_refuses_anything_else(value):
    message = refusal(validation.mac_prefix, "mac_prefix", value)
    assert message == "mac_prefix must be one to five hex octets like 00:11:22"
