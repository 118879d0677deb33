"""A small CRI v1 client over containerd's gRPC socket, as kubelet talks to it.

grpcio (the design's choice for gRPC) with the project's own ``protos/cri/v1/api.proto``; the
calls go through grpc's generic unary-unary stubs, so no generated service code is needed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from protos.cri.v1 import api_pb2 as cri
from tests.harness.containerd import CriSettings, PrivateContainerd
from tests.harness.image import build_busybox_image

M = TypeVar("M", bound=Message)

RUNTIME_SERVICE = "runtime.v1.RuntimeService"
#: The sandbox ("pause") image: busybox sleeping, as in the feasibility study.
PAUSE_REF = "localhost/lxcri-pause:test"


class CriClient:
    def __init__(self, socket: str) -> None:
        self._channel = grpc.insecure_channel(f"unix://{socket}")

    def close(self) -> None:
        self._channel.close()

    def call(self, method: str, request: Message, response: type[M],
             timeout: float = 60.0) -> M:
        stub = self._channel.unary_unary(
            f"/{RUNTIME_SERVICE}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response.FromString)
        result: M = stub(request, timeout=timeout)
        return result

    # -- the calls the tests make, with kubelet's shapes ------------------------------------

    def version(self) -> cri.VersionResponse:
        return self.call("Version", cri.VersionRequest(version="v1"), cri.VersionResponse)

    def run_pod(self, config: cri.PodSandboxConfig, handler: str) -> str:
        r = self.call("RunPodSandbox", cri.RunPodSandboxRequest(config=config,
                                                                runtime_handler=handler),
                      cri.RunPodSandboxResponse)
        return r.pod_sandbox_id

    def stop_pod(self, pod: str) -> None:
        self.call("StopPodSandbox", cri.StopPodSandboxRequest(pod_sandbox_id=pod),
                  cri.StopPodSandboxResponse)

    def remove_pod(self, pod: str) -> None:
        self.call("RemovePodSandbox", cri.RemovePodSandboxRequest(pod_sandbox_id=pod),
                  cri.RemovePodSandboxResponse)

    def pod_status(self, pod: str) -> cri.PodSandboxStatusResponse:
        return self.call("PodSandboxStatus",
                         cri.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True),
                         cri.PodSandboxStatusResponse)

    def create(self, pod: str, config: cri.ContainerConfig,
               sandbox: cri.PodSandboxConfig) -> str:
        r = self.call("CreateContainer", cri.CreateContainerRequest(
            pod_sandbox_id=pod, config=config, sandbox_config=sandbox),
            cri.CreateContainerResponse)
        return r.container_id

    def start(self, cid: str) -> None:
        self.call("StartContainer", cri.StartContainerRequest(container_id=cid),
                  cri.StartContainerResponse)

    def stop(self, cid: str, timeout: int) -> None:
        self.call("StopContainer", cri.StopContainerRequest(container_id=cid, timeout=timeout),
                  cri.StopContainerResponse, timeout=timeout + 60)

    def remove(self, cid: str) -> None:
        self.call("RemoveContainer", cri.RemoveContainerRequest(container_id=cid),
                  cri.RemoveContainerResponse)

    def status(self, cid: str) -> cri.ContainerStatusResponse:
        return self.call("ContainerStatus",
                         cri.ContainerStatusRequest(container_id=cid, verbose=True),
                         cri.ContainerStatusResponse)

    def exec_sync(self, cid: str, cmd: list[str], timeout: int = 10) -> cri.ExecSyncResponse:
        return self.call("ExecSync", cri.ExecSyncRequest(container_id=cid, cmd=cmd,
                                                         timeout=timeout),
                         cri.ExecSyncResponse, timeout=timeout + 30)

    def update(self, cid: str, resources: cri.LinuxContainerResources) -> None:
        self.call("UpdateContainerResources",
                  cri.UpdateContainerResourcesRequest(container_id=cid, linux=resources),
                  cri.UpdateContainerResourcesResponse)

    def container_stats(self, cid: str) -> cri.ContainerStats:
        return self.call("ContainerStats", cri.ContainerStatsRequest(container_id=cid),
                         cri.ContainerStatsResponse).stats

    def pod_stats(self, pod: str) -> cri.PodSandboxStats:
        return self.call("PodSandboxStats", cri.PodSandboxStatsRequest(pod_sandbox_id=pod),
                         cri.PodSandboxStatsResponse).stats


def kv(**pairs: Any) -> list[cri.KeyValue]:
    return [cri.KeyValue(key=k, value=str(v)) for k, v in pairs.items()]


@contextlib.contextmanager
def cri_containerd(workdir: Path, busybox_tar: Path
                   ) -> Iterator[tuple[PrivateContainerd, CriClient]]:
    """A started private containerd with the CRI plugin (namespace ``k8s.io``), the busybox
    image of ``busybox_tar`` and a pause image, and a client; always cleaned up."""
    pause = build_busybox_image(workdir / "pause.tar", PAUSE_REF,
                                cmd=["/bin/sleep", "2147483647"])
    ctd = PrivateContainerd(namespace="k8s.io", cri=CriSettings(sandbox_image=PAUSE_REF))
    client: CriClient | None = None
    try:
        ctd.start()
        ctd.import_image(busybox_tar)
        ctd.import_image(pause)
        client = CriClient(ctd.address)
        assert client.version().runtime_name == "containerd"
        yield ctd, client
    finally:
        if client is not None:
            client.close()
        ctd.cleanup()
