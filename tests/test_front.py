"""The HTTP front: prompt ACKs for Deno, body bounds, token reloads, the one error ladder."""

from __future__ import annotations

import json
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from denokv import texts as T
from tests.support.deno import deno_binary, deno_env, run_deno
from tests.support.kvconnect import NIL_ID, RawKv
from tests.support.paths import DENO_SCRIPTS
from tests.support.processes import ServerFactory, ServerProcess

DATA_HEADERS = {"x-denokv-version": "3", "x-denokv-database-id": NIL_ID}


def metric(url: str, name: str) -> float | None:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


# -- prompt ACKs (TCP_QUICKACK) --------------------------------------------------------


@pytest.mark.deno
@pytest.mark.parametrize("http_server", ["granian", "granian-asgi", "hypercorn"])
def test_every_request_of_a_deno_client_gets_its_prompt_ack(
    server_factory: ServerFactory, http_server: str
) -> None:
    srv = server_factory(http_server=http_server).start()
    config = json.dumps({"target": srv.url, "calls": 20, "warmup": 2})
    proc = subprocess.run(
        [deno_binary(), "run", "--unstable-kv", "-A", str(Path("bench/seq_client.ts")), config],
        env=deno_env(srv.token), capture_output=True, text=True, timeout=120, check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sent = metric(srv.url, 'denokv_tcp_quickack_total{result="sent"}')
    missed = metric(srv.url, 'denokv_tcp_quickack_total{result="socket_not_found"}')
    # 2 metadata exchanges, 1 set, 2 x (2 warm-up + 20) calls, and our own /metrics.
    assert sent is not None and sent >= 2 + 1 + 44
    assert missed == 0


@pytest.mark.parametrize("by_cookie", [True, False], ids=["socket-cookie", "peer-name"])
def test_the_nudger_finds_each_connection_and_never_closes_a_descriptor(
    by_cookie: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from denokv.server import tcp
    from denokv.server.tcp import AckNudger

    if not by_cookie:  # as on a kernel or machine without SO_COOKIE
        monkeypatch.setattr(tcp, "_SO_COOKIE", None)
    nudger = AckNudger()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        peer = client.getsockname()
        open_fds = sorted(os.listdir("/proc/self/fd"))
        nudger.nudge(peer, port)
        nudger.nudge(peer, port)
        assert (nudger.stats.nudged, nudger.stats.scans) == (2, 1)  # one scan per connection
        if not by_cookie:
            assert nudger.identified_by() == "peer name"
        elif sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64"):
            # told apart from a reused descriptor number without getpeername
            assert nudger.identified_by() == "socket cookie"
        assert served.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        client.sendall(b"still open")
        assert served.recv(64) == b"still open"
        assert sorted(os.listdir("/proc/self/fd")) == open_fds
        # The connection closes; a new one likely gets the same descriptor number.
        client.close()
        served.close()
        client2 = socket.create_connection(("127.0.0.1", port))
        served2, _ = listener.accept()
        with client2, served2:
            nudger.nudge(peer, port)  # the old connection: found nowhere, not the new one
            assert nudger.stats.nudged == 2
            nudger.nudge(peer, port)  # and not scanned for again
            assert nudger.stats.scans == 2
            nudger.nudge(client2.getsockname(), port)
            assert nudger.stats.nudged == 3
            served2.sendall(b"ok")
            assert client2.recv(8) == b"ok"


def test_without_tcp_quickack_nothing_is_touched(server_factory: ServerFactory) -> None:
    srv = server_factory(extra_args=["--no-tcp-quickack"]).start()
    assert httpx.get(srv.url + "/healthz").status_code == 200
    assert metric(srv.url, "denokv_tcp_quickack_total") is None


# -- bodies ------------------------------------------------------------------------------


def test_deeply_nested_metadata_json_is_a_400_not_a_500(server: ServerProcess) -> None:
    for http2 in (False, True):
        with httpx.Client(http1=not http2, http2=http2) as client:
            headers = {"content-type": "application/json",
                       "authorization": f"Bearer {server.token}"}  # fmt: skip
            resp = client.post(server.url + "/", content=b"[" * 100_000, headers=headers)
        assert (resp.status_code, resp.text) == (400, T.NEED_PROTOCOL_2)
    assert "Traceback" not in server.logs() and "ERROR" not in server.logs()


@pytest.fixture
def slow_server(server_factory: ServerFactory) -> ServerProcess:
    return server_factory(extra_args=["--request-body-timeout", "1s"]).start()


def test_a_trickling_http1_body_is_cut_off_with_408(slow_server: ServerProcess) -> None:
    head = (
        f"POST /v2/snapshot_read HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {slow_server.token}"
        f"\r\nx-denokv-version: 3\r\nx-denokv-database-id: {NIL_ID}\r\ncontent-length: 100\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", slow_server.port), timeout=15) as sock:
        sock.sendall(head.encode() + b"\x0a\x05")  # 2 of the 100 bytes promised, then nothing
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(T.BODY_TIMEOUT.encode()):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert answer.endswith(T.BODY_TIMEOUT.encode())


def test_a_trickling_h2c_body_is_cut_off_with_408(slow_server: ServerProcess) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with socket.create_connection(("127.0.0.1", slow_server.port), timeout=15) as sock:
        conn.initiate_connection()
        headers = [(":method", "POST"), (":scheme", "http"), (":authority", "x"),
                   (":path", "/v2/atomic_write"), ("authorization", f"Bearer {slow_server.token}"),
                   *DATA_HEADERS.items()]  # fmt: skip
        conn.send_headers(1, headers)
        conn.send_data(1, b"\x12")  # part of a body that never ends
        sock.sendall(conn.data_to_send())
        status, body, ended = None, b"", False
        while not ended:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(len(event.data), 1)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    ended = True
            sock.sendall(conn.data_to_send())
    assert (status, body.decode()) == (b"408", T.BODY_TIMEOUT)


def test_a_body_that_arrives_in_time_is_served(slow_server: ServerProcess) -> None:
    kv = RawKv(slow_server.url, slow_server.token, http2=True)
    try:
        assert kv.get(b"\x02missing\x00") is None
    finally:
        kv.close()


# -- access tokens -------------------------------------------------------------------------


@pytest.mark.deno
def test_tokens_rotate_on_sighup_with_a_running_deno_program(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    old, new = "old-token-0123456789", "new-token-0123456789"
    token_file = tmp_path / "tokens"
    token_file.write_text(old + "\n")
    srv = server_factory(extra_args=["--access-token-file", str(token_file)]).start()
    deno = subprocess.Popen(
        [deno_binary(), "run", "--unstable-kv", "-A", str(DENO_SCRIPTS / "rotation.ts"), srv.url],
        env=deno_env(old), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert deno.stdin is not None and deno.stdout is not None
    to_deno, from_deno = deno.stdin, deno.stdout
    assert srv.proc is not None
    server_proc = srv.proc

    def get() -> str:
        to_deno.write("get\n")
        to_deno.flush()
        answer: str = json.loads(from_deno.readline())
        return answer

    def reload(text: str) -> None:
        token_file.write_text(text)
        seen = srv.logs().count("access tokens reloaded")
        server_proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while srv.logs().count("access tokens reloaded") == seen:
            assert time.monotonic() < deadline, srv.logs()[-2000:]
            time.sleep(0.05)

    try:
        assert get() == "ok"
        reload(f"{new}\n{old}\n")  # both accepted while clients move over
        assert get() == "ok"
        assert run_deno("errors.ts", srv.url, "get", token=new) == {"get": "ok"}
        reload(f"{new}\n")  # the old one is gone: 401, and Deno gives up instead of hanging
        assert T.INVALID_TOKEN in get()
        assert run_deno("errors.ts", srv.url, "get", token=new) == {"get": "ok"}
    finally:
        deno.kill()
        deno.wait()


def test_a_bad_token_file_on_reload_keeps_the_old_tokens(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    token = "kept-token-0123456789"
    token_file = tmp_path / "tokens"
    token_file.write_text(token)
    srv = server_factory(extra_args=["--access-token-file", str(token_file)]).start()
    token_file.write_text("short\n")
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "could not reload the access tokens" not in srv.logs():
        assert time.monotonic() < deadline, srv.logs()[-2000:]
        time.sleep(0.05)
    kv = RawKv(srv.url, token)
    try:
        assert kv.get(b"\x02k\x00") is None
    finally:
        kv.close()


@pytest.mark.parametrize("http_server", ["granian", "hypercorn"])
@pytest.mark.parametrize("http2", [False, True])
@pytest.mark.slow
def test_a_watch_stream_ends_when_its_client_goes_away(
    server_factory: ServerFactory, http_server: str, http2: bool
) -> None:
    from denokv.proto import datapath_pb2 as pb

    srv = server_factory(http_server=http_server).start()
    body = pb.Watch(keys=[pb.WatchKey(key=b"\x02w\x00")]).SerializeToString()
    headers = {"authorization": f"Bearer {srv.token}", **DATA_HEADERS}
    client = httpx.Client(http1=not http2, http2=http2)
    with client, client.stream("POST", srv.url + "/v2/watch", content=body, headers=headers) as r:
        assert r.status_code == 200
        chunks = r.iter_bytes()  # kept: dropping the iterator would close the response
        assert next(chunks)  # the stream is up
        assert metric(srv.url, "denokv_watch_streams_open") == 1
    deadline = time.monotonic() + 15
    while metric(srv.url, "denokv_watch_streams_open") != 0:
        assert time.monotonic() < deadline, "the watch stream outlived its client"
        time.sleep(0.1)
