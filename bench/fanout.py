"""Live message fan-out of MessagingService: S open subscriptions, paced sends, timed receipt.

Subscriber processes (spawn context) hold the subscription streams over one of three
transports: native gRPC on the server's port (about 250 streams per channel, each channel
its own HTTP/2 connection), server-sent events through Envoy (HTTP/1.1, a connection per
stream, httpx) or the WebSocket channel through Envoy (a connection per stream,
``websockets``). Messages are sent over gRPC whatever the transport. The parent process:

1. learns a start id: it subscribes (as admin) to the first used account, sends it a marker
   message and reads the marker's id back; every stream subscribes with ``after_id`` set to
   it, so no older backlog is replayed;
2. starts the subscriber processes and waits until each has started all its calls (opened
   at a paced rate; a stream refused with a transient status before it received anything
   is reopened, and counted in ``open_retries``);
3. readiness: sends one warm-up message to every used account and waits until every stream
   has received its account's warm-up (a stream that received anything is registered for
   live messages, since the server registers a subscription before replaying its backlog);
4. sends ``rounds`` measured rounds, one text message to every used account per round, evenly
   paced at ``send_rate`` and each fired as its own task (at most 256 in flight); the content
   carries the run's nonce, the round, the account and the send time, so a subscriber
   computes send-to-receipt latency from the content alone;
5. waits until every expected delivery arrived, or 10 s after the last send, then tells the
   subscriber processes to stop (a multiprocessing Event), and merges what they return:
   per-stream receipt counts per round and latencies already computed.

Acknowledgement: like a real device, each account acknowledges what it received
(AckMessages, ``POST /api/device/messages/ack/`` for SSE, an ``{"ack": [ids]}`` frame for
the WebSocket), from one of its streams only, in batches every 0.5 s, so the server's bound
on pending messages per account (100 by default) is never reached however many rounds run.
Warm-up messages are acknowledged only when the run ends: a stream of the account that is
reopened (or slow to open) after its sibling received the warm-up still has it replayed.

Deliveries are counted per (stream, round) once; a message that never reached a stream is
reported in ``lost``, a second copy in ``duplicates``. If ``server_pid`` is given, the
server's VmRSS is sampled every 0.5 s while the streams are open, and so is Envoy's if
``edge_pid`` is (SSE is transcoded there).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import multiprocessing
import queue
import random
import resource
import secrets
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from devicehub.v1 import messaging_pb2, messaging_pb2_grpc

log = logging.getLogger(__name__)

STREAMS_PER_CHANNEL = 250
# New subscriptions per second, all processes together. grpc.aio servers cancel calls beyond
# about 1,000 that arrive before the application takes them (grpc core's pending-request
# limit), so a burst of thousands of calls would see CANCELLED; opening is paced instead.
OPEN_RATE = 1000.0
OPEN_BATCH = 50
# A stream that fails with one of these before it received its warm-up message is reopened
# (after a backoff of at most OPEN_BACKOFF_MAX s), at most OPEN_ATTEMPTS times in all: it
# cannot have missed anything, since a subscription replays every unacknowledged message
# after ``after_id``. A stream that fails later, or otherwise, is an error. (On a loaded
# machine Envoy answered about 2% of 5,000 WebSocket handshakes with 503, likely its 1 s
# connect timeout to the bridge; five attempts within 8 s were not always enough.)
OPEN_ATTEMPTS = 10
OPEN_BACKOFF_MAX = 4.0
RETRIED_CODES = frozenset(
    {grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
RETRIED_STATUSES = frozenset({429, 499, 502, 503, 504})  # the same, through Envoy
SSE_PATH = "/api/device/messages/stream/"
ACK_PATH = "/api/device/messages/ack/"
MAX_IN_FLIGHT_SENDS = 256
MAX_IN_FLIGHT_ACKS = 64
ACK_INTERVAL = 0.5
PROGRESS_INTERVAL = 0.1
RSS_INTERVAL = 0.5
OPEN_TIMEOUT = 120.0
READY_TIMEOUT = 120.0
DRAIN_TIMEOUT = 10.0
SEND_TIMEOUT = 30.0
MARKER_TIMEOUT = 30.0
RESULT_TIMEOUT = 60.0
CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1),)
# Slots of the shared progress array, per subscriber process.
OPENED, WARMED, FAILED, DELIVERED = range(4)
SLOTS = 4


def _raise_open_files_limit() -> None:
    """Raises this process's soft limit on open files to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _cpu_seconds() -> float:
    """CPU time (user + system) this process used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _measured_content(nonce: str, round_: int, account_id: int, sent: float) -> str:
    return f"bench {nonce} {round_} {account_id} {sent:.6f}"


def _warmup_content(nonce: str, account_id: int) -> str:
    return f"warmup {nonce} {account_id}"


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def read_rss_mb(pid: int) -> float | None:
    """VmRSS of process ``pid`` in MB (kB / 1024), None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# --------------------------------------------------------------------------------------
# Subscriber processes


@dataclass
class SubscriberJob:
    """What one subscriber process subscribes: its slice of the streams."""

    index: int
    target: str
    tokens: dict[int, str]  # account id -> bearer token
    streams: list[tuple[int, bool]]  # (account id, acknowledges for its account)
    after_id: int
    nonce: str
    rounds: int
    open_rate: float  # new streams per second of this process
    transport: str = "grpc"  # one of TRANSPORTS
    edge: str = ""  # the REST edge (Envoy), http://host:port: SSE and WebSocket streams


@dataclass
class SubscriberResult:
    """What one subscriber process saw. ``counts[s * rounds + r]``: copies of round ``r``
    received by stream ``s`` of the job (saturating at 255)."""

    index: int
    counts: bytes = b""
    latencies_ms: array[float] = field(default_factory=lambda: array("d"))
    last_receipt: float = 0.0
    stream_errors: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    open_retries: int = 0
    retry_codes: dict[str, int] = field(default_factory=dict)
    acked: int = 0
    ack_errors: int = 0
    misrouted: int = 0  # a message of this run for another account
    foreign: int = 0  # a message without this run's nonce
    cpu_seconds: float = 0.0
    fatal: str = ""


# A transport's receive() calls this for every message: (message id, text content).
Deliver = Callable[[int, str], None]


class _GrpcTransport:
    """Native gRPC ``SubscribeMessages`` on the server's own port: about
    STREAMS_PER_CHANNEL streams per channel, each channel its own HTTP/2 connection."""

    def __init__(self, job: SubscriberJob) -> None:
        self.job = job
        self.channels = [
            grpc.aio.insecure_channel(job.target, options=CHANNEL_OPTIONS)
            for _ in range(connections("grpc", len(job.streams)))
        ]
        self.stubs = [messaging_pb2_grpc.MessagingServiceStub(c) for c in self.channels]
        self.calls: dict[int, Any] = {}
        self.auth = {account: _auth(token) for account, token in job.tokens.items()}

    async def receive(self, slot: int, account: int, deliver: Deliver) -> tuple[str, bool]:
        request = messaging_pb2.SubscribeMessagesRequest(after_id=self.job.after_id)
        call = self.stubs[slot % len(self.stubs)].SubscribeMessages(
            request, metadata=self.auth[account]
        )
        self.calls[slot] = call
        try:
            async for response in call:
                if response.WhichOneof("event") == "message":
                    deliver(response.message.id, response.message.message.content)
        except grpc.aio.AioRpcError as error:
            return f"stream {error.code().name}: {error.details()}", error.code() in RETRIED_CODES
        return "stream ended by the server", False

    async def ack(self, account: int, ids: list[int]) -> str | None:
        request = messaging_pb2.AckMessagesRequest(ids=ids)
        try:
            await self.stubs[account % len(self.stubs)].AckMessages(
                request, metadata=self.auth[account], timeout=SEND_TIMEOUT
            )
        except grpc.aio.AioRpcError as error:
            return f"ack {error.code().name}: {error.details()}"
        return None

    async def close(self) -> None:
        for call in self.calls.values():
            call.cancel()
        for channel in self.channels:
            await channel.close()


class _SseTransport:
    """``GET /api/device/messages/stream/`` through Envoy (server-sent events), one
    HTTP/1.1 connection per stream like an app's; acknowledged with ``POST
    /api/device/messages/ack/``. Streams are spread over httpx clients of about
    STREAMS_PER_CHANNEL connections each: a client's pool walks its connections on every
    request, so one pool of thousands would cost the subscriber more than the server."""

    def __init__(self, job: SubscriberJob) -> None:
        self.job = job
        # No read timeout: a stream is silent between messages (heartbeats every 15 s).
        timeout = httpx.Timeout(SEND_TIMEOUT, read=None)
        unbounded = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        self.clients = [
            httpx.AsyncClient(base_url=job.edge, limits=unbounded, timeout=timeout)
            for _ in range(max(1, math.ceil(len(job.streams) / STREAMS_PER_CHANNEL)))
        ]
        self.acks = httpx.AsyncClient(
            base_url=job.edge,
            limits=httpx.Limits(max_connections=MAX_IN_FLIGHT_ACKS),
            timeout=SEND_TIMEOUT,
        )
        self.headers = {
            account: {"Authorization": f"Bearer {token}"} for account, token in job.tokens.items()
        }

    async def receive(self, slot: int, account: int, deliver: Deliver) -> tuple[str, bool]:
        client = self.clients[slot % len(self.clients)]
        headers = {**self.headers[account], "Accept": "text/event-stream"}
        params = {"after_id": str(self.job.after_id)}
        try:
            async with client.stream("GET", SSE_PATH, params=params, headers=headers) as response:
                if response.status_code != 200:
                    status = response.status_code
                    return f"stream HTTP {status}", status in RETRIED_STATUSES
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    message = json.loads(line[5:]).get("message")
                    if message is not None:  # not a heartbeat
                        deliver(int(message["id"]), message["message"].get("content", ""))
        except httpx.TransportError as error:
            # Connection refused or reset: transient like UNAVAILABLE.
            return f"stream {type(error).__name__}: {error}", True
        return "stream ended by the server", False

    async def ack(self, account: int, ids: list[int]) -> str | None:
        try:
            response = await self.acks.post(
                ACK_PATH, json={"ids": ids}, headers=self.headers[account]
            )
        except httpx.TransportError as error:
            return f"ack {type(error).__name__}: {error}"
        return None if response.status_code == 200 else f"ack HTTP {response.status_code}"

    async def close(self) -> None:
        for client in [*self.clients, self.acks]:
            await client.aclose()


class _WebSocketTransport:
    """The documented WebSocket channel through Envoy,
    ``ws://<edge>/api/device/messages/{user_id}/?token=&after_id=``, one connection per
    stream; acknowledged with an ``{"ack": [ids]}`` frame on the acknowledging stream.
    The client offers compression, as browsers and app libraries do."""

    def __init__(self, job: SubscriberJob) -> None:
        self.job = job
        self.base = job.edge.replace("http://", "ws://", 1)
        self.sockets: dict[int, ClientConnection] = {}  # account -> its acknowledging stream

    async def receive(self, slot: int, account: int, deliver: Deliver) -> tuple[str, bool]:
        url = (
            f"{self.base}/api/device/messages/{account}/"
            f"?token={self.job.tokens[account]}&after_id={self.job.after_id}"
        )
        acks = self.job.streams[slot][1]
        try:
            # The server pings idle connections; the client answers and need not ping.
            async with ws_connect(
                url, open_timeout=SEND_TIMEOUT, ping_interval=None, close_timeout=2
            ) as socket:
                if acks:
                    self.sockets[account] = socket
                async for raw in socket:
                    frame = json.loads(raw)
                    deliver(int(frame["id"]), frame["message"].get("content", ""))
            return "closed by the server", False
        except InvalidStatus as error:
            status = error.response.status_code
            return f"handshake HTTP {status}", status in RETRIED_STATUSES
        except ConnectionClosed as error:
            return f"closed: {error}", False
        except (OSError, TimeoutError, InvalidHandshake) as error:
            return f"connect {type(error).__name__}: {error}", True
        finally:
            if acks:
                self.sockets.pop(account, None)

    async def ack(self, account: int, ids: list[int]) -> str | None:
        socket = self.sockets.get(account)
        if socket is None:
            return "ack: the acknowledging stream is closed"
        try:
            await socket.send(json.dumps({"ack": ids}))
        except ConnectionClosed as error:
            return f"ack: {error}"
        return None

    async def close(self) -> None:
        pass  # each stream's connection closes as its task is cancelled


TRANSPORTS = {"grpc": _GrpcTransport, "sse": _SseTransport, "websocket": _WebSocketTransport}


def connections(transport: str, streams: int) -> int:
    """Connections that ``streams`` streams of ``transport`` take: gRPC multiplexes
    STREAMS_PER_CHANNEL on one; SSE and WebSocket take one each."""
    if transport == "grpc":
        return max(1, math.ceil(streams / STREAMS_PER_CHANNEL))
    return streams


class _Subscriber:
    """The streams of one subscriber process and what they received."""

    def __init__(self, job: SubscriberJob, progress: Any, stop: Any) -> None:
        self.job = job
        self.progress = progress
        self.stop = stop
        self.base = job.index * SLOTS
        self.result = SubscriberResult(job.index)
        self.counts = bytearray(len(job.streams) * job.rounds)
        self.warmed = bytearray(len(job.streams))
        self.opened = 0
        self.warmed_total = 0
        self.failed = 0
        self.delivered = 0
        self.stopping = False
        self.errors: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.to_ack: dict[int, list[int]] = {}
        self.warmups: dict[int, list[int]] = {}  # acknowledged when the run ends
        self.ack_slots = asyncio.Semaphore(MAX_IN_FLIGHT_ACKS)
        self.acks_done = asyncio.Event()

    def _publish(self) -> None:
        self.progress[self.base + OPENED] = self.opened
        self.progress[self.base + WARMED] = self.warmed_total
        self.progress[self.base + FAILED] = self.failed
        self.progress[self.base + DELIVERED] = self.delivered

    def _on_message(
        self, slot: int, account: int, acks: bool, message_id: int, content: str, now: float
    ) -> None:
        parts = content.split(" ")
        if len(parts) < 3 or parts[1] != self.job.nonce:
            self.result.foreign += 1
            return
        if acks:
            pending = self.warmups if parts[0] == "warmup" else self.to_ack
            pending.setdefault(account, []).append(message_id)
        if parts[0] == "warmup" and len(parts) == 3:
            if parts[2] != str(account):
                self.result.misrouted += 1
            elif not self.warmed[slot]:
                self.warmed[slot] = 1
                self.warmed_total += 1
            return
        if parts[0] != "bench" or len(parts) != 5:
            self.result.foreign += 1
            return
        try:
            round_, target, sent = int(parts[2]), int(parts[3]), float(parts[4])
        except ValueError:
            self.result.foreign += 1
            return
        if target != account or not 0 <= round_ < self.job.rounds:
            self.result.misrouted += 1
            return
        position = slot * self.job.rounds + round_
        copies = self.counts[position]
        if copies < 255:
            self.counts[position] = copies + 1
        if copies == 0:
            self.delivered += 1
            self.result.latencies_ms.append((now - sent) * 1e3)
            self.result.last_receipt = max(self.result.last_receipt, now)

    async def _stream(self, slot: int, transport: Any) -> None:
        """Holds one subscription; reopens it while it has not yet received its warm-up."""
        account, acks = self.job.streams[slot]

        def deliver(message_id: int, content: str) -> None:
            self._on_message(slot, account, acks, message_id, content, time.time())

        self.opened += 1
        for attempt in range(1, OPEN_ATTEMPTS + 1):
            reason, transient = await transport.receive(slot, account, deliver)
            if self.stopping:
                return
            if self.warmed[slot] or not transient or attempt == OPEN_ATTEMPTS:
                break
            # Not established yet (nothing received): nothing can have been missed.
            self.result.open_retries += 1
            self.retries[reason] += 1
            backoff = min(OPEN_BACKOFF_MAX, 0.5 * 2 ** (attempt - 1))
            await asyncio.sleep(backoff * (1 + random.random()))
        self.failed += 1
        self.errors[reason] += 1

    async def _ack(self, transport: Any, account: int, ids: list[int]) -> None:
        async with self.ack_slots:
            error = await transport.ack(account, ids)
        if error is None:
            self.result.acked += len(ids)
        else:
            self.result.ack_errors += 1
            self.errors[error] += 1

    async def _flush_acks(self, transport: Any) -> None:
        batches, self.to_ack = self.to_ack, {}
        await asyncio.gather(*(self._ack(transport, a, ids) for a, ids in batches.items()))

    async def _ack_loop(self, transport: Any) -> None:
        """Acknowledges every ACK_INTERVAL; once ``acks_done`` is set, a last time."""
        while not self.acks_done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.acks_done.wait(), ACK_INTERVAL)
            await self._flush_acks(transport)
        for account, ids in self.warmups.items():
            self.to_ack.setdefault(account, []).extend(ids)
        await self._flush_acks(transport)  # what arrived during the last one, the warm-ups

    async def run(self) -> SubscriberResult:
        _raise_open_files_limit()
        count = len(self.job.streams)
        transport = TRANSPORTS[self.job.transport](self.job)
        tasks: list[asyncio.Task[None]] = []
        acker = asyncio.create_task(self._ack_loop(transport))
        try:
            for first in range(0, count, OPEN_BATCH):
                for slot in range(first, min(count, first + OPEN_BATCH)):
                    tasks.append(asyncio.create_task(self._stream(slot, transport)))
                self._publish()
                await asyncio.sleep(OPEN_BATCH / self.job.open_rate)
            while not self.stop.is_set():
                self._publish()
                await asyncio.sleep(PROGRESS_INTERVAL)
            self._publish()
            self.acks_done.set()
            await acker  # acknowledges what is left: nothing stays pending for the next run
        finally:
            self.stopping = True
            acker.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await transport.close()
        self.result.counts = bytes(self.counts)
        self.result.stream_errors = self.failed
        self.result.error_codes = dict(self.errors)
        self.result.retry_codes = dict(self.retries)
        self.result.cpu_seconds = _cpu_seconds()
        return self.result


def _subscriber_entry(job: SubscriberJob, progress: Any, stop: Any, results: Any) -> None:
    """Subscriber process body: holds its streams until ``stop`` is set, then reports."""
    try:
        result = asyncio.run(_Subscriber(job, progress, stop).run())
    except BaseException as error:
        result = SubscriberResult(job.index, fatal=f"{type(error).__name__}: {error}")
    results.put(result)


# --------------------------------------------------------------------------------------
# The parent: marker, sender, readiness, collection


@dataclass
class _Sends:
    """Outcome of one paced batch of sends."""

    ok: set[tuple[int, int]] = field(default_factory=set)  # (round, account)
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    first_sent: float = 0.0
    last_done: float = 0.0
    max_lag_ms: float = 0.0


async def _send_paced(
    stub: messaging_pb2_grpc.MessagingServiceStub,
    metadata: tuple[tuple[str, str], ...],
    plan: list[tuple[int, int]],
    rate: float,
    nonce: str,
) -> _Sends:
    """Sends one text message per (round, account) of ``plan``, evenly paced at ``rate``
    per second, each as its own task; round -1 is the warm-up."""
    sends = _Sends()
    slots = asyncio.Semaphore(MAX_IN_FLIGHT_SENDS)
    tasks: set[asyncio.Task[None]] = set()

    async def send(round_: int, account: int) -> None:
        try:
            sent = time.time()
            if not sends.first_sent:
                sends.first_sent = sent
            if round_ < 0:
                content = _warmup_content(nonce, account)
            else:
                content = _measured_content(nonce, round_, account, sent)
            request = messaging_pb2.SendMessageRequest(
                type="text",
                message=messaging_pb2.MessagePayload(content=content),
                user_id=str(account),
            )
            await stub.SendMessage(request, metadata=metadata, timeout=SEND_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            sends.errors[f"send {error.code().name}: {error.details()}"] += 1
        else:
            done = time.time()
            sends.ok.add((round_, account))
            sends.latencies_ms.append((done - sent) * 1e3)
        finally:
            sends.last_done = max(sends.last_done, time.time())
            slots.release()

    started = time.perf_counter()
    for i, (round_, account) in enumerate(plan):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        sends.max_lag_ms = max(sends.max_lag_ms, (time.perf_counter() - due) * 1e3)
        task = asyncio.create_task(send(round_, account))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return sends


async def _start_id(
    stub: messaging_pb2_grpc.MessagingServiceStub,
    admin: tuple[tuple[str, str], ...],
    account: int,
    token: str,
    nonce: str,
) -> int:
    """Id of a marker message sent (and acknowledged) now: subscriptions start after it."""
    content = f"marker {nonce}"
    request = messaging_pb2.SubscribeMessagesRequest(after_id=0, user_id=account)
    call = stub.SubscribeMessages(request, metadata=admin)

    async def find() -> int:
        async for response in call:
            event = response.WhichOneof("event")
            if event == "message" and response.message.message.content == content:
                return response.message.id
        raise RuntimeError("the marker subscription ended before the marker arrived")

    finder = asyncio.create_task(find())
    try:
        send = messaging_pb2.SendMessageRequest(
            type="text",
            message=messaging_pb2.MessagePayload(content=content),
            user_id=str(account),
        )
        await stub.SendMessage(send, metadata=admin, timeout=SEND_TIMEOUT)
        marker = await asyncio.wait_for(finder, MARKER_TIMEOUT)
    finally:
        call.cancel()
        finder.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await finder
    await stub.AckMessages(
        messaging_pb2.AckMessagesRequest(ids=[marker]), metadata=_auth(token), timeout=SEND_TIMEOUT
    )
    return marker


class _Subscribers:
    """The subscriber processes and their shared progress counters."""

    def __init__(self, jobs: list[SubscriberJob]) -> None:
        context = multiprocessing.get_context("spawn")
        self.jobs = jobs
        self.progress = context.RawArray("q", len(jobs) * SLOTS)
        self.stop = context.Event()
        self.results: Any = context.Queue()
        self.processes = [
            context.Process(
                target=_subscriber_entry,
                args=(job, self.progress, self.stop, self.results),
                name=f"fanout-subscriber-{job.index}",
                daemon=True,
            )
            for job in jobs
        ]

    def start(self) -> None:
        for process in self.processes:
            process.start()

    def total(self, slot: int) -> int:
        return sum(self.progress[p * SLOTS + slot] for p in range(len(self.jobs)))

    def counts(self) -> str:
        return (
            f"{self.total(OPENED)} opened, {self.total(WARMED)} warmed up, "
            f"{self.total(FAILED)} failed, {self.total(DELIVERED)} measured deliveries"
        )

    def check_alive(self) -> None:
        for process in self.processes:
            if process.exitcode is not None and not self.stop.is_set():
                raise RuntimeError(
                    f"subscriber process {process.name} exited with {process.exitcode} "
                    f"({self.counts()})"
                )

    async def wait_for(self, slot: int, goal: int, timeout: float, what: str) -> None:
        """Waits until the counter ``slot`` reaches ``goal``; RuntimeError on timeout or
        when failed streams make it unreachable."""
        deadline = time.monotonic() + timeout
        while self.total(slot) < goal:
            self.check_alive()
            if self.total(FAILED) and self.total(slot) + self.total(FAILED) >= goal:
                raise RuntimeError(f"streams failed while waiting for {what}: {self.counts()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"timed out after {timeout:.0f} s waiting for {what} "
                    f"({goal} streams): {self.counts()}"
                )
            await asyncio.sleep(PROGRESS_INTERVAL)

    def collect(self) -> list[SubscriberResult]:
        """Stops the subscribers and returns their results (blocking)."""
        self.stop.set()
        results: list[SubscriberResult] = []
        deadline = time.monotonic() + RESULT_TIMEOUT
        started = [p for p in self.processes if p.pid is not None]
        while len(results) < len(started):
            try:
                results.append(self.results.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                break
        for process in started:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join(5)
        return sorted(results, key=lambda result: result.index)


@dataclass
class _Plan:
    streams: list[tuple[int, bool]]  # (account id, acknowledges), in global stream order
    accounts: list[int]
    tokens: dict[int, str]
    streams_of: dict[int, int]


def _plan(
    accounts: list[tuple[int, str]], streams: int, streams_per_account: int, processes: int
) -> _Plan:
    if streams < 1 or streams_per_account < 1 or processes < 1:
        raise ValueError("streams, streams_per_account and processes must be positive")
    if processes > streams:
        raise ValueError(f"{processes} processes for {streams} streams")
    needed = math.ceil(streams / streams_per_account)
    if needed > len(accounts):
        raise ValueError(
            f"{streams} streams at {streams_per_account} per account need {needed} accounts; "
            f"{len(accounts)} given"
        )
    used = accounts[:needed]
    if len({account for account, _ in used}) != needed:
        raise ValueError("accounts must be distinct")
    plan = _Plan([], [account for account, _ in used], dict(used), {})
    for i, account in enumerate(plan.accounts):
        share = min(streams_per_account, streams - i * streams_per_account)
        plan.streams_of[account] = share
        plan.streams.extend((account, k == 0) for k in range(share))
    return plan


@dataclass
class _Route:
    """Where the streams go: ``transport`` (one of TRANSPORTS) to the gRPC ``target`` or
    the REST ``edge``."""

    transport: str
    target: str
    edge: str


def _jobs(
    plan: _Plan, route: _Route, processes: int, after_id: int, nonce: str, rounds: int
) -> list[SubscriberJob]:
    jobs = []
    total = len(plan.streams)
    for p in range(processes):
        chunk = plan.streams[p * total // processes : (p + 1) * total // processes]
        tokens = {account: plan.tokens[account] for account, _ in chunk}
        rate = OPEN_RATE / processes
        jobs.append(
            SubscriberJob(
                p,
                route.target,
                tokens,
                chunk,
                after_id,
                nonce,
                rounds,
                rate,
                route.transport,
                route.edge,
            )
        )
    return jobs


@dataclass
class _Run:
    """Figures the parent gathers while driving the run."""

    jobs: list[SubscriberJob] = field(default_factory=list)
    sends: _Sends = field(default_factory=_Sends)
    warmup_errors: int = 0
    rss_start: float | None = None
    rss_max: float | None = None
    rss_end: float | None = None
    edge_rss_max: float | None = None
    open_seconds: float = 0.0
    ready_seconds: float = 0.0
    drain_seconds: float = 0.0
    results: list[SubscriberResult] = field(default_factory=list)


async def _sample_rss(pid: int | None, edge_pid: int | None, run: _Run) -> None:
    while True:
        rss = read_rss_mb(pid) if pid is not None else None
        if rss is not None:
            run.rss_max = rss if run.rss_max is None else max(run.rss_max, rss)
        edge = read_rss_mb(edge_pid) if edge_pid is not None else None
        if edge is not None:
            run.edge_rss_max = edge if run.edge_rss_max is None else max(run.edge_rss_max, edge)
        await asyncio.sleep(RSS_INTERVAL)


async def _drive(
    route: _Route,
    admin_token: str,
    plan: _Plan,
    *,
    processes: int,
    rounds: int,
    send_rate: float,
    server_pid: int | None,
    edge_pid: int | None,
) -> _Run:
    run = _Run()
    nonce = secrets.token_hex(6)
    admin = _auth(admin_token)
    channel = grpc.aio.insecure_channel(route.target, options=CHANNEL_OPTIONS)
    stub = messaging_pb2_grpc.MessagingServiceStub(channel)
    sampler: asyncio.Task[None] | None = None
    subscribers: _Subscribers | None = None
    failure: BaseException | None = None
    try:
        first = plan.accounts[0]
        after_id = await _start_id(stub, admin, first, plan.tokens[first], nonce)
        if server_pid is not None:
            run.rss_start = read_rss_mb(server_pid)
        run.jobs = _jobs(plan, route, processes, after_id, nonce, rounds)
        subscribers = _Subscribers(run.jobs)
        started = time.perf_counter()
        subscribers.start()
        if server_pid is not None or edge_pid is not None:
            sampler = asyncio.create_task(_sample_rss(server_pid, edge_pid, run))
        await subscribers.wait_for(OPENED, len(plan.streams), OPEN_TIMEOUT, "streams to open")
        run.open_seconds = time.perf_counter() - started

        warmup = await _send_paced(stub, admin, [(-1, a) for a in plan.accounts], send_rate, nonce)
        run.warmup_errors = sum(warmup.errors.values())
        if run.warmup_errors:
            raise RuntimeError(f"warm-up sends failed: {dict(warmup.errors)}")
        await subscribers.wait_for(WARMED, len(plan.streams), READY_TIMEOUT, "warm-up receipt")
        run.ready_seconds = time.perf_counter() - started

        schedule = [(r, account) for r in range(rounds) for account in plan.accounts]
        run.sends = await _send_paced(stub, admin, schedule, send_rate, nonce)
        expected = sum(plan.streams_of[account] for _, account in run.sends.ok)
        drained = time.perf_counter()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while subscribers.total(DELIVERED) < expected and time.monotonic() < deadline:
            subscribers.check_alive()
            await asyncio.sleep(PROGRESS_INTERVAL)
        run.drain_seconds = time.perf_counter() - drained
        if server_pid is not None:
            run.rss_end = read_rss_mb(server_pid)
            if run.rss_end is not None:
                run.rss_max = max(run.rss_max or 0.0, run.rss_end)
    except BaseException as error:
        failure = error
        raise
    finally:
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        if subscribers is not None:
            run.results = await asyncio.to_thread(subscribers.collect)
        await channel.close()
        if failure is not None:
            codes: Counter[str] = Counter()
            for result in run.results:
                codes.update(result.error_codes)
            failure.add_note(f"subscriber errors: {dict(codes.most_common(10))}")
    fatal = [r.fatal for r in run.results if r.fatal]
    if fatal or len(run.results) < processes:
        raise RuntimeError(
            f"{processes - len(run.results) + len(fatal)} subscriber processes failed: {fatal}"
        )
    return run


def run(
    target: str,
    admin_token: str,
    accounts: list[tuple[int, str]],
    *,
    streams: int,
    streams_per_account: int,
    rounds: int,
    send_rate: float,
    processes: int,
    server_pid: int | None = None,
    transport: str = "grpc",
    edge: str = "",
    edge_pid: int | None = None,
) -> dict[str, float | str | None]:
    """Holds ``streams`` subscriptions from ``processes`` processes and measures the
    send-to-receipt latency of ``rounds`` paced rounds of one message per used account.

    ``accounts`` are (account id, bearer token) pairs with a bound device each; the first
    ``ceil(streams / streams_per_account)`` are used. ``admin_token`` sends the messages,
    over gRPC to ``target``; the streams subscribe over ``transport`` (one of TRANSPORTS),
    to ``target`` for gRPC, through the REST ``edge`` (http://host:port) otherwise.
    Raises ValueError for an impossible plan and RuntimeError when the streams do not open
    or do not all receive their warm-up message in time (with the counts reached).
    """
    if rounds < 1 or send_rate <= 0:
        raise ValueError("rounds and send_rate must be positive")
    if transport not in TRANSPORTS or (transport != "grpc" and not edge):
        raise ValueError(f"transport {transport!r} (edge {edge!r})")
    plan = _plan(accounts, streams, streams_per_account, processes)
    _raise_open_files_limit()
    began = time.perf_counter()
    cpu_began = _cpu_seconds()
    figures = asyncio.run(
        _drive(
            _Route(transport, target, edge),
            admin_token,
            plan,
            processes=processes,
            rounds=rounds,
            send_rate=send_rate,
            server_pid=server_pid,
            edge_pid=edge_pid,
        )
    )
    total_seconds = time.perf_counter() - began
    sender_cpu = _cpu_seconds() - cpu_began

    expected = deliveries = lost = duplicates = unconfirmed = 0
    latencies: list[float] = []
    last_receipt = 0.0
    errors: Counter[str] = Counter()
    jobs = figures.jobs
    for job, result in zip(jobs, figures.results, strict=True):
        latencies.extend(result.latencies_ms)
        last_receipt = max(last_receipt, result.last_receipt)
        errors.update(result.error_codes)
        for slot, (account, _) in enumerate(job.streams):
            for round_ in range(rounds):
                copies = result.counts[slot * rounds + round_]
                if (round_, account) in figures.sends.ok:
                    expected += 1
                    deliveries += copies > 0
                    lost += copies == 0
                    duplicates += max(0, copies - 1)
                else:
                    unconfirmed += copies
    errors.update(figures.sends.errors)
    for message, count in errors.most_common(10):
        log.warning("fan-out: %d x %s", count, message)
    retries: Counter[str] = Counter()
    for result in figures.results:
        retries.update(result.retry_codes)
    for message, count in retries.most_common(10):
        log.warning("fan-out: reopened %d streams after %s", count, message)

    sends = figures.sends
    window = last_receipt - sends.first_sent if sends.first_sent and last_receipt else 0.0
    send_errors = sum(sends.errors.values())
    stream_errors = sum(r.stream_errors for r in figures.results)
    ack_errors = sum(r.ack_errors for r in figures.results)
    misrouted = sum(r.misrouted for r in figures.results)
    rss_growth = (
        (figures.rss_max - figures.rss_start) * 1024 / streams
        if figures.rss_max is not None and figures.rss_start is not None
        else None
    )
    return {
        "streams": streams,
        "accounts": len(plan.accounts),
        "processes": processes,
        "transport": transport,
        "connections": sum(connections(transport, len(j.streams)) for j in jobs),
        "rounds": rounds,
        "messages": len(sends.ok),
        "expected_deliveries": expected,
        "deliveries": deliveries,
        "lost": lost,
        "duplicates": duplicates,
        "unconfirmed_deliveries": unconfirmed,  # copies of messages whose send failed
        "p50_ms": percentile(latencies, 0.50),
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "per_second": deliveries / window if window > 0 else 0.0,
        "send_rate": send_rate,
        "sends_per_second": (
            len(sends.ok) / (sends.last_done - sends.first_sent)
            if sends.last_done > sends.first_sent
            else 0.0
        ),
        "send_p50_ms": percentile(sends.latencies_ms, 0.50),
        "send_p99_ms": percentile(sends.latencies_ms, 0.99),
        "send_lag_max_ms": sends.max_lag_ms,
        "server_rss_start_mb": figures.rss_start,
        "server_rss_mb": figures.rss_max,
        "edge_rss_mb": figures.edge_rss_max,
        "server_rss_end_mb": figures.rss_end,
        "server_rss_per_stream_kb": rss_growth,
        "acked": sum(r.acked for r in figures.results),
        "open_retries": sum(r.open_retries for r in figures.results),
        "send_errors": send_errors,
        "stream_errors": stream_errors,
        "ack_errors": ack_errors,
        "misrouted": misrouted,
        "foreign": sum(r.foreign for r in figures.results),
        "errors": send_errors + stream_errors + ack_errors + misrouted,
        # Client CPU: on a small machine the clients compete with the server for cores.
        "subscriber_cpu_seconds": sum(r.cpu_seconds for r in figures.results),
        "sender_cpu_seconds": sender_cpu,
        "open_seconds": figures.open_seconds,
        "ready_seconds": figures.ready_seconds,
        "drain_seconds": figures.drain_seconds,
        "total_seconds": total_seconds,
    }
