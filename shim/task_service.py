"""The ``containerd.task.v2.Task`` service: the RPC edge.

Protobuf stops here: requests become plain values for :class:`runtime.supervisor.Supervisor`,
results become response messages, and errdefs errors become status codes (``shim.status_map``)
in the ttrpc server. RPCs this release does not implement answer Unimplemented (code 12), as the
runtime v2 README requires.
"""

from __future__ import annotations

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
from runtime.errdefs import NotImplementedErr
from runtime.store import Store
from runtime.supervisor import Supervisor
from runtime.types import CreateConfig, Mount, Status, Stdio
from shim.events import timestamp
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


class TaskService:
    def __init__(self, supervisor: Supervisor, store: Store) -> None:
        self.sup = supervisor
        self.store = store

    def methods(self) -> dict[str, Method[Any, Any]]:
        """The registration table: RPC name → (request type, handler)."""
        s = self
        table: dict[str, tuple[type[Message], Callable[[Any, RequestContext], Awaitable[Any]]]] = {
            "State": (pb.StateRequest, s.state),
            "Create": (pb.CreateTaskRequest, s.create),
            "Start": (pb.StartRequest, s.start),
            "Delete": (pb.DeleteRequest, s.delete),
            "Pids": (pb.PidsRequest, s.pids),
            "Pause": (pb.PauseRequest, s.unimplemented("Pause")),
            "Resume": (pb.ResumeRequest, s.unimplemented("Resume")),
            "Checkpoint": (pb.CheckpointTaskRequest, s.unimplemented(
                "Checkpoint (filesystem checkpoints arrive with ZFS storage)")),
            "Kill": (pb.KillRequest, s.kill),
            "Exec": (pb.ExecProcessRequest, s.unimplemented("Exec")),
            "ResizePty": (pb.ResizePtyRequest, s.unimplemented("ResizePty")),
            "CloseIO": (pb.CloseIORequest, s.unimplemented("CloseIO")),
            "Update": (pb.UpdateTaskRequest, s.unimplemented("Update")),
            "Wait": (pb.WaitRequest, s.wait),
            "Stats": (pb.StatsRequest, s.unimplemented("Stats")),
            "Connect": (pb.ConnectRequest, s.connect),
            "Shutdown": (pb.ShutdownRequest, s.shutdown),
        }
        return {name: Method(req, handler) for name, (req, handler) in table.items()}

    @staticmethod
    def unimplemented(what: str) -> Callable[[Any, RequestContext], Awaitable[Message]]:
        async def handler(req: Any, ctx: RequestContext) -> Message:
            raise NotImplementedErr(f"{what} is not implemented by io.containerd.proxmox.v2 yet")
        return handler

    async def create(self, req: pb.CreateTaskRequest, ctx: RequestContext) -> pb.CreateTaskResponse:
        bundle = Path(req.bundle)
        if req.checkpoint:
            raise NotImplementedErr("restoring a task from a checkpoint")
        config = CreateConfig(
            id=req.id,
            namespace=self.sup.namespace,
            bundle=bundle,
            spec=oci.load_spec(bundle),
            rootfs=tuple(Mount(m.type, m.source, m.target, tuple(m.options))
                         for m in req.rootfs),
            stdio=Stdio(req.stdin, req.stdout, req.stderr, req.terminal),
            state_dir=self.store.container_dir(self.sup.namespace, req.id),
            settings=load_settings(req.options) if req.HasField("options") else
            runtime_config.load(),
        )
        pid = await self.sup.create(config)
        return pb.CreateTaskResponse(pid=pid)

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
        return pb.PidsResponse(processes=[task_pb2.ProcessInfo(pid=pid)
                                          for pid, _ in self.sup.pids(req.id)])

    async def connect(self, req: pb.ConnectRequest, ctx: RequestContext) -> pb.ConnectResponse:
        return pb.ConnectResponse(shim_pid=os.getpid(), task_pid=self.sup.task_pid(req.id))

    async def shutdown(self, req: pb.ShutdownRequest, ctx: RequestContext) -> empty_pb2.Empty:
        self.sup.shutdown_requested()
        return EMPTY
