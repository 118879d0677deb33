"""The sans-IO ServerConnection and ClientConnection, without sockets (style-anchors.md §3.4)."""

from __future__ import annotations

import pytest
from google.protobuf import wrappers_pb2

from protos.ttrpc import request_pb2
from shim.ttrpc import (
    ClientConnection,
    Code,
    ConnectionClosed,
    FrameIgnored,
    LocalProtocolError,
    RemoteProtocolError,
    RequestReceived,
    RequestRejected,
    ResponseReceived,
    ServerConnection,
    Status,
    StreamError,
)
from shim.ttrpc._frame import MAX_DATA, FrameHeader, MessageType, encode_frame, encode_header
from tests.unit.ttrpc.test_frame import CONNECT_REQUEST, CONNECT_RESPONSE, EMPTY_RESPONSE

TASK = "containerd.task.v2.Task"


def _request(stream_id: int, service: str = TASK, method: str = "State", **kw: object) -> bytes:
    data = request_pb2.Request(service=service, method=method, **kw).SerializeToString()  # type: ignore[arg-type]
    return encode_frame(stream_id, MessageType.REQUEST, data)


def _response(server: ServerConnection) -> request_pb2.Response:
    wire = server.data_to_send()
    response = request_pb2.Response()
    response.ParseFromString(wire[10:])
    return response


# -- worked examples (§1.9) ------------------------------------------------------------------


def test_client_encodes_worked_example_request() -> None:
    client = ClientConnection()
    sid = client.send_request(TASK, "Connect", b"\x0a\x03abc")
    assert sid == 1
    assert client.data_to_send() == CONNECT_REQUEST
    assert client.data_to_send() == b""


def test_server_decodes_request_and_encodes_worked_example_response() -> None:
    server = ServerConnection()
    assert server.receive_data(CONNECT_REQUEST) == [
        RequestReceived(1, TASK, "Connect", b"\x0a\x03abc", 0, ())
    ]
    assert server.active_streams == {1}
    server.send_response(1, bytes.fromhex("08d20910ae2c"))
    assert server.data_to_send() == CONNECT_RESPONSE
    assert server.active_streams == frozenset()


def test_success_response_omits_status_and_empty_is_zero_length() -> None:
    server = ServerConnection()
    server.receive_data(_request(5, method="Kill"))
    server.send_response(5)  # an Empty result
    assert server.data_to_send() == EMPTY_RESPONSE


def test_status_ok_is_treated_as_success() -> None:
    server = ServerConnection()
    server.receive_data(_request(1))
    server.send_response(1, b"\x08\x01", Status(Code.OK, "fine"))
    wire = server.data_to_send()
    assert wire == encode_frame(1, MessageType.RESPONSE, b"\x12\x02\x08\x01")


def test_error_response_carries_status_and_no_payload() -> None:
    server = ServerConnection()
    server.receive_data(_request(3))
    server.send_response(3, status=Status(Code.NOT_FOUND, "container not created: not found"))
    wire = server.data_to_send()
    assert wire == bytes.fromhex("00000026 00000003 02 00 0a24 0805 1220") + (
        b"container not created: not found"
    )


def test_send_response_misuse_is_local_error() -> None:
    server = ServerConnection()
    with pytest.raises(LocalProtocolError):
        server.send_response(1)  # never received
    server.receive_data(_request(1))
    with pytest.raises(LocalProtocolError):
        server.send_response(1, b"\x08\x01", Status(Code.INTERNAL, "x"))
    server.send_response(1)
    with pytest.raises(LocalProtocolError):
        server.send_response(1)  # answered twice


def test_oversized_response_is_replaced_by_resource_exhausted() -> None:
    server = ServerConnection()
    server.receive_data(_request(1))
    server.send_response(1, b"\x00" * MAX_DATA)
    response = _response(server)
    assert response.status.code == Code.RESOURCE_EXHAUSTED
    assert "exceed maximum message size of 4194304" in response.status.message
    assert response.payload == b""


# -- chunking --------------------------------------------------------------------------------


def _two_requests() -> tuple[bytes, list[RequestReceived]]:
    first = _request(1, method="Create", payload=b"\x0a\x03abc", timeout_nano=5_000_000,
                     metadata=[request_pb2.KeyValue(key="containerd-namespace-ttrpc", value="k8s")])
    second = _request(3, method="Wait", payload=b"")
    events = [
        RequestReceived(1, TASK, "Create", b"\x0a\x03abc", 5_000_000,
                        (("containerd-namespace-ttrpc", "k8s"),)),
        RequestReceived(3, TASK, "Wait", b"", 0, ()),
    ]
    return first + second, events


def test_server_every_split_point_of_two_frames() -> None:
    stream, expected = _two_requests()
    # b"" means EOF, so the split points are 1 .. len-1 (plus the unsplit stream).
    assert ServerConnection().receive_data(stream) == expected
    for cut in range(1, len(stream)):
        server = ServerConnection()
        events = server.receive_data(stream[:cut]) + server.receive_data(stream[cut:])
        assert events == expected, cut


def test_server_byte_by_byte() -> None:
    stream, expected = _two_requests()
    server = ServerConnection()
    events = []
    for i in range(len(stream)):
        events += server.receive_data(stream[i : i + 1])
    assert events == expected


def test_client_every_split_point_of_responses() -> None:
    stream = CONNECT_RESPONSE + EMPTY_RESPONSE
    expected = [
        ResponseReceived(1, None, bytes.fromhex("08d20910ae2c")),
        ResponseReceived(5, None, b""),
    ]
    for cut in range(1, len(stream)):
        client = ClientConnection()
        assert client.receive_data(stream[:cut]) + client.receive_data(stream[cut:]) == expected
    client = ClientConnection()
    events = [e for i in range(len(stream)) for e in client.receive_data(stream[i : i + 1])]
    assert events == expected


# -- server-side stream errors ---------------------------------------------------------------


def test_oversized_request_answered_and_next_frame_served() -> None:
    server = ServerConnection()
    length = MAX_DATA + 1
    big = encode_header(FrameHeader(length, 1, MessageType.REQUEST, 0))
    events = server.receive_data(big + b"\x00" * 1000)
    message = f"message length {length} exceed maximum message size of 4194304"
    assert events == [RequestRejected(1, Status(Code.RESOURCE_EXHAUSTED, message))]
    response = _response(server)
    assert (response.status.code, response.status.message) == (8, message)
    assert response.payload == b""
    events = server.receive_data(b"\x01" * (length - 1000) + _request(3, method="Pids"))
    assert events == [RequestReceived(3, TASK, "Pids", b"", 0, ())]


def test_undecodable_request_is_invalid_argument_and_connection_continues() -> None:
    server = ServerConnection()
    events = server.receive_data(encode_frame(1, MessageType.REQUEST, b"\x0a\xff"))
    assert len(events) == 1 and isinstance(events[0], RequestRejected)
    assert events[0].status.code == Code.INVALID_ARGUMENT
    assert _response(server).status.code == Code.INVALID_ARGUMENT
    assert server.receive_data(_request(3)) == [RequestReceived(3, TASK, "State", b"", 0, ())]


@pytest.mark.parametrize("second_id", [2, 1, 0])
def test_even_or_reused_stream_id_rejected(second_id: int) -> None:
    server = ServerConnection()
    server.receive_data(_request(1))
    events = server.receive_data(_request(second_id))
    assert len(events) == 1 and isinstance(events[0], RequestRejected)
    assert events[0].stream_id == second_id
    assert events[0].status.code == Code.INVALID_ARGUMENT
    server.send_response(1)  # the valid stream is unaffected


def test_streaming_request_unimplemented() -> None:
    server = ServerConnection()
    frame = encode_frame(1, MessageType.REQUEST, request_pb2.Request(
        service=TASK, method="X").SerializeToString(), flags=0x02)
    [event] = server.receive_data(frame)
    assert isinstance(event, RequestRejected) and event.status.code == Code.UNIMPLEMENTED


def test_non_request_frames_are_ignored_by_server() -> None:
    server = ServerConnection()
    stream = (encode_frame(1, MessageType.DATA, b"abc", flags=1)
              + encode_frame(9, MessageType.RESPONSE, b"")
              + encode_frame(11, 0x7F, b"zz")
              + _request(1))
    events = server.receive_data(stream)
    assert events == [
        FrameIgnored(1, 3, 1, 3), FrameIgnored(9, 2, 0, 0), FrameIgnored(11, 0x7F, 0, 2),
        RequestReceived(1, TASK, "State", b"", 0, ()),
    ]
    assert server.data_to_send() == b""


def test_garbage_raises_remote_protocol_error_sticky() -> None:
    server = ServerConnection()
    with pytest.raises(RemoteProtocolError):
        server.receive_data(b"\xde\xad\xbe\xef" * 8)
    with pytest.raises(RemoteProtocolError):
        server.receive_data(_request(1))


def test_eof_event() -> None:
    server = ServerConnection()
    server.receive_data(_request(1)[:4])
    assert server.receive_data(b"") == [ConnectionClosed(4)]


# -- client ----------------------------------------------------------------------------------


def test_client_stream_ids_odd_and_increasing() -> None:
    client = ClientConnection()
    ids = [client.send_request("s", "m") for _ in range(50)]
    assert ids == list(range(1, 100, 2))
    server = ServerConnection()
    events = server.receive_data(client.data_to_send())
    assert [e.stream_id for e in events if isinstance(e, RequestReceived)] == ids
    assert len(events) == len(ids)


def test_client_oversized_request_consumes_no_id() -> None:
    client = ClientConnection()
    with pytest.raises(LocalProtocolError):
        client.send_request("s", "m", b"\x00" * MAX_DATA)
    assert client.data_to_send() == b""
    assert client.send_request("s", "m") == 1


def test_client_metadata_and_timeout_on_the_wire() -> None:
    client = ClientConnection()
    client.send_request("s", "m", b"", 1_500, {"X-Key": ["a", "b"], "other": "c"})
    [event] = ServerConnection().receive_data(client.data_to_send())
    assert isinstance(event, RequestReceived)
    assert event.timeout_ns == 1_500
    assert event.metadata == (("x-key", "a"), ("x-key", "b"), ("other", "c"))


def test_client_accepts_zero_length_response() -> None:
    assert ClientConnection().receive_data(EMPTY_RESPONSE) == [ResponseReceived(5, None, b"")]


def test_client_decodes_error_status() -> None:
    wire = bytes.fromhex("00000026 00000003 02 00 0a24 0805 1220") + (
        b"container not created: not found"
    )
    assert ClientConnection().receive_data(wire) == [
        ResponseReceived(3, Status(5, "container not created: not found"), b"")
    ]


def test_client_stream_errors() -> None:
    client = ClientConnection()
    big = encode_header(FrameHeader(MAX_DATA + 2, 1, MessageType.RESPONSE, 0)) + b"\x00" * (
        MAX_DATA + 2
    )
    data = encode_frame(3, MessageType.DATA, b"x")
    bad = encode_frame(5, MessageType.RESPONSE, b"\x12\xff")
    server_req = encode_frame(2, MessageType.REQUEST, b"")
    events = client.receive_data(big + data + bad + server_req + EMPTY_RESPONSE)
    assert [type(e) for e in events] == [StreamError, StreamError, StreamError, FrameIgnored,
                                         ResponseReceived]
    assert [e.status.code for e in events[:3]] == [  # type: ignore[union-attr]
        Code.RESOURCE_EXHAUSTED, Code.INTERNAL, Code.INTERNAL,
    ]


def test_round_trip_pair() -> None:
    client, server = ClientConnection(), ServerConnection()
    payload = wrappers_pb2.StringValue(value="hello").SerializeToString()
    s1 = client.send_request("svc", "Echo", payload)
    s2 = client.send_request("svc", "Echo", b"")
    requests = server.receive_data(client.data_to_send())
    assert [r.stream_id for r in requests if isinstance(r, RequestReceived)] == [s1, s2]
    server.send_response(s2, status=Status(Code.NOT_FOUND, "nope"))
    server.send_response(s1, payload)
    assert client.receive_data(server.data_to_send()) == [
        ResponseReceived(s2, Status(5, "nope"), b""),
        ResponseReceived(s1, None, payload),
    ]
