"""Holds many server-sent-event subscriptions open through Envoy, in a process of its own.

    python bench/sse_streams.py --url http://127.0.0.1:8080 --tokens tokens.txt --streams 5000

Opens ``--streams`` ``GET /api/device/messages/stream/`` requests (HTTP/1.1, one connection
each, like apps do), spread over the accounts in ``--tokens``, and prints one JSON line
once every stream has answered: how many are held (status 200) and how many were refused
(with their statuses). It then holds them until SIGTERM or stdin closes and prints a
second line: how many of the held streams ended early. One asyncio process holds them all:
a stream costs a socket, not a thread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import sys
from collections import Counter
from urllib.parse import urlparse

PATH = "/api/device/messages/stream/"
OPEN_CONCURRENCY = 200  # connections being set up at once


async def _open(host: str, port: int, token: str) -> tuple[int, asyncio.StreamReader | None]:
    """Opens one stream; its HTTP status and, when held, its reader."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    status_line = await reader.readline()
    parts = status_line.split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if status != 200:
        writer.close()
        return status, None
    _STREAMS.append(writer)
    return status, reader


_STREAMS: list[asyncio.StreamWriter] = []


async def _drain_until_closed(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def main(url: str, tokens: list[str], streams: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def opened(index: int) -> tuple[int, asyncio.StreamReader | None]:
        async with gate:
            try:
                return await asyncio.wait_for(
                    _open(host, port, tokens[index % len(tokens)]), timeout=30
                )
            except (OSError, TimeoutError):
                return 0, None

    results = await asyncio.gather(*(opened(i) for i in range(streams)))
    statuses = Counter(status for status, _ in results)
    readers = [reader for _, reader in results if reader is not None]
    print(
        json.dumps({"held": len(readers), "refused": {str(k): v for k, v in statuses.items()}}),
        flush=True,
    )
    holding = [asyncio.ensure_future(_drain_until_closed(r)) for r in readers]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), stop.set)
    await stop.wait()
    ended_early = sum(task.done() for task in holding)
    print(json.dumps({"ended_early": ended_early}), flush=True)
    for task in holding:
        task.cancel()
    for writer in _STREAMS:
        with contextlib.suppress(Exception):
            writer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the REST edge, http://host:port")
    parser.add_argument("--tokens", required=True, help="a file of access tokens, one a line")
    parser.add_argument("--streams", type=int, required=True)
    args = parser.parse_args()
    with open(args.tokens) as handle:
        account_tokens = handle.read().split()
    asyncio.run(main(args.url, account_tokens, args.streams))
