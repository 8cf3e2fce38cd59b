"""The REST edge's metadata names: devicehub.api.rest_edge spells them for the server, and
the Lua filter, which cannot import Python, declares the same names as locals of its own."""

from __future__ import annotations

import re

from devicehub.api import rest_edge
from devicehub.resources import LUA_FILTER

LUA_DECLARATION = re.compile(r'^local (\w+_(?:HEADER|TRAILER)) = "([^"]*)"$', re.MULTILINE)
# Documented response headers (and a download's Range request header) pass the edge
# untouched: the Lua filter never names them.
PASSED_THROUGH = {"NEXT_PAGE_TOKEN_HEADER", "ALIMTALK_OUTCOME_HEADER", "RANGE_HEADER"}


def python_names() -> dict[str, str]:
    return {
        name: value
        for name, value in vars(rest_edge).items()
        if name.endswith(("_HEADER", "_TRAILER")) and isinstance(value, str)
    }


def test_the_lua_filter_declares_every_name_it_acts_on_as_python_spells_it():
    declared = dict(LUA_DECLARATION.findall(LUA_FILTER.read_text()))
    expected = {name: value for name, value in python_names().items() if name not in PASSED_THROUGH}
    assert declared == expected


def test_the_lua_filter_spells_each_name_only_in_its_declaration():
    source = LUA_FILTER.read_text()
    for value in python_names().values():
        assert source.count(f'"{value}"') <= 1, value


def test_names_are_lower_case_metadata_keys():
    # gRPC metadata keys are lower case; Envoy matches header names case-insensitively.
    for name, value in python_names().items():
        assert re.fullmatch(r"[a-z0-9-]+", value), name
