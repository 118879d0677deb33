"""Domain events become containerd topics and Any messages with bare type URLs."""

from __future__ import annotations

from protos.containerd.events import task_pb2
from runtime import events as ev
from runtime.types import Mount, Stdio
from shim.events import envelope, to_message


def test_type_urls_are_bare_full_names() -> None:
    req = envelope("default", ev.ProcessExited("c1", "c1", 42, 7, 1764140000.5), now=1.0)
    env = req.envelope
    assert env.topic == "/tasks/exit"
    assert env.namespace == "default"
    assert env.event.type_url == "containerd.events.TaskExit"
    msg = task_pb2.TaskExit.FromString(env.event.value)
    assert (msg.container_id, msg.id, msg.pid, msg.exit_status) == ("c1", "c1", 42, 7)
    assert msg.exited_at.seconds == 1764140000 and msg.exited_at.nanos == 500_000_000


def test_every_event_has_a_topic() -> None:
    samples: list[ev.Event] = [
        ev.TaskCreated("c", "/b", (Mount("overlay", "overlay", "", ("ro",)),), Stdio("i", "o"),
                       "", 1),
        ev.TaskStarted("c", 1), ev.ProcessExited("c", "c", 1, 0, 1.0),
        ev.TaskDeleted("c", 1, 0, 1.0), ev.ExecAdded("c", "e"), ev.ExecStarted("c", "e", 2),
        ev.TaskPaused("c"), ev.TaskResumed("c"), ev.TaskOOM("c"),
    ]
    topics = [to_message(e)[0] for e in samples]
    assert topics == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete",
                      "/tasks/exec-added", "/tasks/exec-started", "/tasks/paused",
                      "/tasks/resumed", "/tasks/oom"]
    create = to_message(samples[0])[1]
    assert isinstance(create, task_pb2.TaskCreate)
    assert create.rootfs[0].options == ["ro"] and create.io.stdin == "i"
