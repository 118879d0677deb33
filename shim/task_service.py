"""The ``containerd.task.v2.Task`` service: the RPC edge.

Protobuf stops here: requests become plain values for :class:`runtime.supervisor.Supervisor`,
results become response messages, and errdefs errors become status codes (``shim.status_map``)
in the ttrpc server. Each RPC is logged and each lifecycle RPC recorded in the event log here
(shim/observe.py). RPCs this release does not implement answer Unimplemented (code 12), as the
runtime v2 README requires.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from google.protobuf import empty_pb2
from google.protobuf.message import Message

from protos.containerd.runtimeoptions.v1 import api_pb2 as runtimeoptions_pb2
from protos.containerd.task.v2 import shim_pb2 as pb
from protos.containerd.types.task import task_pb2
from runtime import config as runtime_config
from runtime import oci
from runtime.errdefs import InvalidArgument, NotImplementedErr
from runtime.oplog import OpLog
from runtime.store import Store
from runtime.supervisor import Supervisor
from runtime.types import CreateConfig, ExecConfig, Mount, Status, Stdio
from shim.events import timestamp
from shim.observe import observed
from shim.ttrpc import Method, RequestContext

SERVICE = "containerd.task.v2.Task"

STATUS: dict[Status, int] = {
    Status.CREATED: task_pb2.CREATED,
    Status.RUNNING: task_pb2.RUNNING,
    Status.PAUSING: task_pb2.PAUSING,
    Status.PAUSED: task_pb2.PAUSED,
    Status.STOPPED: task_pb2.STOPPED,
    Status.DELETED: task_pb2.STOPPED,
}

EMPTY = empty_pb2.Empty()


def load_settings(options: Any) -> dict[str, Any]:
    """The configuration for a task: the file or inline TOML its runtime options name
    (``runtimeoptions.v1.Options``, what CRI and ``ctr --runtime-config-path`` send), else the
    default file. Other option types (e.g. runc's) carry nothing for this runtime."""
    if options.type_url.removeprefix("type.googleapis.com/") == "runtimeoptions.v1.Options":
        opts = runtimeoptions_pb2.Options.FromString(options.value)
        if opts.config_path or opts.config_body:
            return runtime_config.load(Path(opts.config_path) if opts.config_path else None,
                                       body=bytes(opts.config_body) or None)
    return runtime_config.load()


#: [storage] Must equal storage.provisioner.CHECKPOINT_OPTION (a unit test checks it); the
#: RPC edge does not import storage.
CHECKPOINT_OPTION = "lxcri.checkpoint_path"


def checkpoint_exit(options: Any) -> bool:
    """[storage] ``exit`` (field 1, bool) of containerd.runc.v1.CheckpointOptions, decoded by
    hand (the project has no runc protos): ``--exit`` of ``ctr task checkpoint``."""
    if not options.type_url.endswith("CheckpointOptions"):
        return False
    data, i = bytes(options.value), 0
    while i < len(data):
        key, i = _varint(data, i)
        if key & 7 == 0:
            value, i = _varint(data, i)
            if key >> 3 == 1:
                return bool(value)
        elif key & 7 == 2:
            length, i = _varint(data, i)
            i += length
        else:
            return False  # fixed-width fields do not occur in CheckpointOptions
    return False


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while i < len(data):
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return value, i


PROCESS_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
RESOURCES_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"


def decode_json_any(value: Any, field: str, url: str) -> dict[str, Any]:
    """An OCI object carried as JSON in an Any (shim-protocol.md §1.10)."""
    if value.type_url and value.type_url.removeprefix("type.googleapis.com/") != url:
        raise InvalidArgument(f"{field}: unexpected type {value.type_url!r}, want {url}")
    try:
        obj = json.loads(value.value or b"{}")
    except ValueError as exc:
        raise InvalidArgument(f"{field}: not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidArgument(f"{field}: must be a JSON object")
    return obj


def process_details(exec_id: str) -> Any:
    """What the runc shim attaches to an exec's pid in Pids: containerd.runc.v1.ProcessDetails
    {1: exec_id}, which ``ctr task ps`` decodes."""
    from google.protobuf import any_pb2

    from protos.containerd.runc.v1 import options_pb2

    msg = options_pb2.ProcessDetails(exec_id=exec_id)
    return any_pb2.Any(type_url=msg.DESCRIPTOR.full_name, value=msg.SerializeToString())


class TaskService:
    def __init__(self, supervisor: Supervisor, store: Store, oplog: OpLog | None = None) -> None:
        self.sup = supervisor
        self.store = store
        # The lifecycle event log (runtime/oplog.py); None records nothing.
        self.oplog = oplog or OpLog(None, source="task")

    def methods(self) -> dict[str, Method[Any, Any]]:
        """The registration table: RPC name → (request type, handler)."""
        s = self
        table: dict[str, tuple[type[Message], Callable[[Any, RequestContext], Awaitable[Any]]]] = {
            "State": (pb.StateRequest, s.state),
            "Create": (pb.CreateTaskRequest, s.create),
            "Start": (pb.StartRequest, s.start),
            "Delete": (pb.DeleteRequest, s.delete),
            "Pids": (pb.PidsRequest, s.pids),
            "Pause": (pb.PauseRequest, s.pause),
            "Resume": (pb.ResumeRequest, s.resume),
            "Checkpoint": (pb.CheckpointTaskRequest, s.checkpoint),
            "Kill": (pb.KillRequest, s.kill),
            "Exec": (pb.ExecProcessRequest, s.exec),
            "ResizePty": (pb.ResizePtyRequest, s.resize_pty),
            "CloseIO": (pb.CloseIORequest, s.close_io),
            "Update": (pb.UpdateTaskRequest, s.update),
            "Wait": (pb.WaitRequest, s.wait),
            "Stats": (pb.StatsRequest, s.stats),
            "Connect": (pb.ConnectRequest, s.connect),
            "Shutdown": (pb.ShutdownRequest, s.shutdown),
        }
        # Each handler logs its line and records its lifecycle event here, at the edge.
        return {name: Method(req, observed(name, handler, self.oplog, self.sup.namespace))
                for name, (req, handler) in table.items()}

    @staticmethod
    def unimplemented(what: str) -> Callable[[Any, RequestContext], Awaitable[Message]]:
        async def handler(req: Any, ctx: RequestContext) -> Message:
            raise NotImplementedErr(f"{what} is not implemented by io.containerd.proxmox.v2 yet")
        return handler

    async def create(self, req: pb.CreateTaskRequest, ctx: RequestContext) -> pb.CreateTaskResponse:
        bundle = Path(req.bundle)
        options: dict[str, Any] = {}
        settings = (load_settings(req.options) if req.HasField("options") else
                    runtime_config.load())
        if req.checkpoint:
            # [storage] containerd unpacked the checkpoint's content (our record file) into
            # this directory; the storage provisioner clones the dataset from the snapshot it
            # names (storage.provisioner.CHECKPOINT_OPTION). The Proxmox backend answers for
            # itself (runtime/proxmox/backend.py).
            section = settings.get("backend")
            proxmox = isinstance(section, dict) and section.get("type") == "proxmox"
            if not proxmox and not any(p.name == "storage" for p in self.sup.provisioners):
                raise NotImplementedErr("restoring a task from a checkpoint needs ZFS storage")
            options[CHECKPOINT_OPTION] = req.checkpoint
        config = CreateConfig(
            id=req.id,
            namespace=self.sup.namespace,
            bundle=bundle,
            spec=oci.load_spec(bundle),
            rootfs=tuple(Mount(m.type, m.source, m.target, tuple(m.options))
                         for m in req.rootfs),
            stdio=Stdio(req.stdin, req.stdout, req.stderr, req.terminal),
            state_dir=self.store.container_dir(self.sup.namespace, req.id),
            settings=settings,
            options=options,
        )
        pid = await self.sup.create(config)
        return pb.CreateTaskResponse(pid=pid)

    async def checkpoint(self, req: pb.CheckpointTaskRequest,
                         ctx: RequestContext) -> empty_pb2.Empty:
        """[storage] ``ctr task checkpoint [--exit]``: a ZFS snapshot recorded in ``req.path``.
        ``--exit`` reaches us only as runc's CheckpointOptions (ctr sends them for runc
        runtime names only; other clients may send them to any runtime)."""
        exit = checkpoint_exit(req.options) if req.HasField("options") else False
        await self.sup.checkpoint(req.id, Path(req.path), exit=exit)
        return EMPTY

    async def start(self, req: pb.StartRequest, ctx: RequestContext) -> pb.StartResponse:
        return pb.StartResponse(pid=await self.sup.start(req.id, req.exec_id))

    async def state(self, req: pb.StateRequest, ctx: RequestContext) -> pb.StateResponse:
        st = self.sup.state(req.id, req.exec_id)
        resp = pb.StateResponse(
            id=st.id, bundle=st.bundle, pid=st.pid, status=STATUS[st.status],  # type: ignore[arg-type]
            stdin=st.stdio.stdin, stdout=st.stdio.stdout, stderr=st.stdio.stderr,
            terminal=st.stdio.terminal, exit_status=st.exit_status, exec_id=st.exec_id)
        if st.exited_at is not None:
            resp.exited_at.CopyFrom(timestamp(st.exited_at))
        return resp

    async def wait(self, req: pb.WaitRequest, ctx: RequestContext) -> pb.WaitResponse:
        ex = await self.sup.wait(req.id, req.exec_id)
        return pb.WaitResponse(exit_status=ex.status, exited_at=timestamp(ex.exited_at))

    async def kill(self, req: pb.KillRequest, ctx: RequestContext) -> empty_pb2.Empty:
        self.sup.kill(req.id, req.exec_id, req.signal, req.all)
        return EMPTY

    async def delete(self, req: pb.DeleteRequest, ctx: RequestContext) -> pb.DeleteResponse:
        ex = await self.sup.delete(req.id, req.exec_id)
        return pb.DeleteResponse(pid=ex.pid, exit_status=ex.status,
                                 exited_at=timestamp(ex.exited_at))

    async def pids(self, req: pb.PidsRequest, ctx: RequestContext) -> pb.PidsResponse:
        return pb.PidsResponse(processes=[
            task_pb2.ProcessInfo(pid=pid, info=process_details(exec_id)) if exec_id else
            task_pb2.ProcessInfo(pid=pid) for pid, exec_id in self.sup.pids(req.id)])

    async def exec(self, req: pb.ExecProcessRequest, ctx: RequestContext) -> empty_pb2.Empty:
        process = decode_json_any(req.spec, "spec", PROCESS_URL)
        args = process.get("args")
        if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
            raise InvalidArgument("spec.args: must be a non-empty list of strings")
        self.sup.add_exec(req.id, ExecConfig(
            exec_id=req.exec_id, process=process,
            stdio=Stdio(req.stdin, req.stdout, req.stderr, req.terminal)))
        return EMPTY

    async def resize_pty(self, req: pb.ResizePtyRequest, ctx: RequestContext) -> empty_pb2.Empty:
        self.sup.resize_pty(req.id, req.exec_id, req.width, req.height)
        return EMPTY

    async def close_io(self, req: pb.CloseIORequest, ctx: RequestContext) -> empty_pb2.Empty:
        self.sup.close_io(req.id, req.exec_id)
        return EMPTY

    async def pause(self, req: pb.PauseRequest, ctx: RequestContext) -> empty_pb2.Empty:
        await self.sup.pause(req.id)
        return EMPTY

    async def resume(self, req: pb.ResumeRequest, ctx: RequestContext) -> empty_pb2.Empty:
        await self.sup.resume(req.id)
        return EMPTY

    async def stats(self, req: pb.StatsRequest, ctx: RequestContext) -> pb.StatsResponse:
        from shim.metrics import encode

        return pb.StatsResponse(stats=encode(self.sup.stats(req.id)))

    async def update(self, req: pb.UpdateTaskRequest, ctx: RequestContext) -> empty_pb2.Empty:
        resources = decode_json_any(req.resources, "resources", RESOURCES_URL)
        await self.sup.update(req.id, resources)
        return EMPTY

    async def connect(self, req: pb.ConnectRequest, ctx: RequestContext) -> pb.ConnectResponse:
        return pb.ConnectResponse(shim_pid=os.getpid(), task_pid=self.sup.task_pid(req.id))

    async def shutdown(self, req: pb.ShutdownRequest, ctx: RequestContext) -> empty_pb2.Empty:
        self.sup.shutdown_requested()
        return EMPTY
