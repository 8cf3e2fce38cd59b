"""The one HTTP client each provider adapter shares across its calls in a process.

A client per call paid a new TCP (and TLS) connection for every provider call; a shared
``httpx.AsyncClient`` keeps its connections open between calls and reuses them. It is
opened on first use and closed by ``close()``, which the server calls on shutdown.

Connections belong to the event loop that opened them. The server runs one loop per
process, so it has one client; a caller that runs the adapter on successive loops
(``asyncio.run`` per call, as scripts and tests do) gets a new client on each, since the
previous loop's connections cannot be used (nor closed) from another one.
"""

from __future__ import annotations

import asyncio

import httpx


class SharedHttpClient:
    """Hands out one ``httpx.AsyncClient`` (with ``timeout`` on every network operation)."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> httpx.AsyncClient:
        """The shared client of the running event loop, opened on first use."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(timeout=self._timeout)
            self._loop = loop
        return self._client

    async def close(self) -> None:
        """Closes the client and its connections; a later call opens a new one."""
        client, loop = self._client, self._loop
        self._client = self._loop = None
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()
