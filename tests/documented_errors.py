"""The documented shape of every 4xx answer, checked by the hostile-input and fuzz tests, and
of a 5xx, which also names its request id."""

from __future__ import annotations

import json

import requests


def assert_documented_error(response: requests.Response, path: str) -> dict:
    """A 4xx with the documented JSON body of ``path``'s API; returns the body."""
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    assert response.headers.get("content-type", "").startswith("application/json"), (
        response.status_code,
        response.headers.get("content-type"),
        response.content[:300],
    )
    body = json.loads(response.content)  # strict: the body must be valid UTF-8 JSON
    if path.startswith("/api/device"):
        assert set(body) == {"status", "message", "code"}, body
        assert body["status"] == "error" and isinstance(body["message"], str), body
        assert isinstance(body["code"], str) and body["code"], body
    else:
        assert set(body) == {"detail"} and isinstance(body["detail"], str), body
    return body


def without_request_id(body: dict) -> dict:
    """A 5xx body less the ``request_id`` every 5xx carries (gateway/rest_edge.lua), which
    must be a non-empty string; compare the rest with the documented body."""
    rest = dict(body)
    request_id = rest.pop("request_id", None)
    assert isinstance(request_id, str) and request_id, body
    return rest
