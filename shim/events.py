"""Publishing task events to containerd (shim-protocol.md section 4).

Domain events from :mod:`runtime.events` become containerd topics and messages here, wrapped in
an Envelope and sent with ``containerd.services.events.ttrpc.v1.Events/Forward`` to containerd's
ttrpc socket (``TTRPC_ADDRESS``). One ordered queue and one forwarding task keep publication
order equal to generation order, as the runc shim's single forwarding goroutine does. Like the Go
publisher (pkg/shim/publisher.go): 5 s per Forward, reconnect when the connection is gone, retry
with a delay growing by 1 s per attempt, drop after 5 attempts.
"""

from __future__ import annotations

import asyncio
import logging
import time

from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from google.protobuf.message import Message

from protos.containerd.events import task_pb2 as ev_pb
from protos.containerd.services.ttrpc.events.v1 import events_pb2
from protos.containerd.types import mount_pb2
from runtime import events as ev
from shim.ttrpc import Client, Code, RpcError

log = logging.getLogger(__name__)

FORWARD_SERVICE = "containerd.services.events.ttrpc.v1.Events"
FORWARD_TIMEOUT = 5.0
MAX_ATTEMPTS = 5
#: Failures worth another attempt: a local timeout or containerd being briefly unavailable.
RETRYABLE = frozenset({Code.DEADLINE_EXCEEDED, Code.UNAVAILABLE})


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.seconds = int(seconds)
    ts.nanos = int((seconds - int(seconds)) * 1e9)
    return ts


def pack_any(msg: Message) -> any_pb2.Any:
    """An Any with the *bare* full name as type URL: containerd compares URLs verbatim and 1.6
    cannot resolve the ``type.googleapis.com/`` prefix that ``Any.Pack`` adds (§1.10)."""
    return any_pb2.Any(type_url=msg.DESCRIPTOR.full_name, value=msg.SerializeToString())


def to_message(event: ev.Event) -> tuple[str, Message]:
    """The containerd topic and message for a domain event (table in §4.2)."""
    match event:
        case ev.TaskCreated():
            return "/tasks/create", ev_pb.TaskCreate(
                container_id=event.container_id, bundle=event.bundle,
                rootfs=[mount_pb2.Mount(type=m.type, source=m.source, target=m.target,
                                        options=list(m.options)) for m in event.rootfs],
                io=ev_pb.TaskIO(stdin=event.stdio.stdin, stdout=event.stdio.stdout,
                                stderr=event.stdio.stderr, terminal=event.stdio.terminal),
                checkpoint=event.checkpoint, pid=event.pid)
        case ev.TaskStarted():
            return "/tasks/start", ev_pb.TaskStart(container_id=event.container_id,
                                                   pid=event.pid)
        case ev.ProcessExited():
            return "/tasks/exit", ev_pb.TaskExit(
                container_id=event.container_id, id=event.id, pid=event.pid,
                exit_status=event.exit_status, exited_at=timestamp(event.exited_at))
        case ev.TaskDeleted():
            return "/tasks/delete", ev_pb.TaskDelete(
                container_id=event.container_id, pid=event.pid,
                exit_status=event.exit_status, exited_at=timestamp(event.exited_at))
        case ev.ExecAdded():
            return "/tasks/exec-added", ev_pb.TaskExecAdded(container_id=event.container_id,
                                                            exec_id=event.exec_id)
        case ev.ExecStarted():
            return "/tasks/exec-started", ev_pb.TaskExecStarted(
                container_id=event.container_id, exec_id=event.exec_id, pid=event.pid)
        case ev.TaskPaused():
            return "/tasks/paused", ev_pb.TaskPaused(container_id=event.container_id)
        case ev.TaskResumed():
            return "/tasks/resumed", ev_pb.TaskResumed(container_id=event.container_id)
        case ev.TaskOOM():
            return "/tasks/oom", ev_pb.TaskOOM(container_id=event.container_id)
    raise TypeError(f"unknown event {event!r}")


def envelope(namespace: str, event: ev.Event, now: float | None = None
             ) -> events_pb2.ForwardRequest:
    topic, msg = to_message(event)
    return events_pb2.ForwardRequest(envelope=events_pb2.Envelope(
        timestamp=timestamp(now if now is not None else time.time()),
        namespace=namespace, topic=topic, event=pack_any(msg)))


class RemotePublisher:
    """An :class:`~runtime.events.EventSink` that forwards to containerd in order."""

    def __init__(self, ttrpc_address: str, namespace: str) -> None:
        self.address = ttrpc_address.removeprefix("unix://")
        self.namespace = namespace
        self._queue: asyncio.Queue[events_pb2.ForwardRequest] = asyncio.Queue()
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._forward_loop())

    def publish(self, event: ev.Event) -> None:
        # The envelope's timestamp is taken now, when the event happens, not when it is sent.
        self._queue.put_nowait(envelope(self.namespace, event))

    async def _forward_loop(self) -> None:
        while True:
            req = await self._queue.get()
            try:
                await self._deliver(req)
            finally:
                self._queue.task_done()

    async def _deliver(self, req: events_pb2.ForwardRequest) -> None:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                client = await self._connect()
                await client.call(FORWARD_SERVICE, "Forward", req, empty_pb2.Empty,
                                  timeout=FORWARD_TIMEOUT)
            except RpcError as exc:
                if exc.code not in RETRYABLE:
                    log.warning("containerd refused event %s: %s", req.envelope.topic, exc)
                    return  # a refusal (e.g. InvalidArgument) will not change on retry
                error: Exception = exc
            except (OSError, ConnectionError, TimeoutError) as exc:
                error = exc
            else:
                return
            await self._drop_client()
            if attempt == MAX_ATTEMPTS:
                log.error("dropping event %s after %d attempts: %s",
                          req.envelope.topic, attempt, error)
                return
            if attempt > 1:  # reconnect once at once, then back off (Go publisher)
                await asyncio.sleep(attempt - 1)

    async def _connect(self) -> Client:
        if self._client is None:
            self._client = await Client.connect(self.address)
        return self._client

    async def _drop_client(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def aclose(self, timeout: float = 5.0) -> None:
        """Flush queued events (up to ``timeout``), then stop."""
        try:
            async with asyncio.timeout(timeout):
                await self._queue.join()
        except TimeoutError:
            log.warning("shutting down with %d events unsent", self._queue.qsize())
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._drop_client()
