"""
The request path (asgi_runtime/handler.py) in a real server process, on every server: each
request's synchronous code runs in a thread of its own, and at most ASGI_REQUEST_THREADS threads
run code at once; a request waiting on its client holds none.

So clients that never read leave the process answering; state a request leaves in its thread,
or a transaction it leaves open, dies with it; past the bound, requests queue and then get 503
with Retry-After; a queued request whose client left never runs. The views are tests/probe's.
Latencies are printed (pytest -s) and asserted only within a generous bound: CI machines are
slow, and what failed here before hung for good.
"""

import contextlib
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import (
    Server,
    fetch,
    free_port,
    get_json,
    post_body,
    procfile_command,
    tcp_connection,
    wait_for,
)
from matrix import once_per_server
from projects import start_production_server

pytestmark = [pytest.mark.slow, once_per_server]

# A request that takes longer than this did not get an answer.
ANSWERED_WITHIN = 5


def send_request(port, path, receive_buffer=None):
    """A raw client that has sent GET `path` and read nothing yet."""
    client = socket.socket()
    try:
        if receive_buffer:
            # Before connecting: the window offered to the server is sized from it.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        client.settimeout(10)
        client.connect(("127.0.0.1", port))
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    except BaseException:
        client.close()
        raise
    return client


def statuses(clients, seconds):
    """Each client's response status, reading no byte past the status line; None for those
    that got none within `seconds` in all."""
    deadline = time.monotonic() + seconds
    found = []
    for client in clients:
        line = b""
        with contextlib.suppress(OSError):
            while not line.endswith(b"\r\n") and len(line) < 100:
                client.settimeout(max(0.01, deadline - time.monotonic()))
                byte = client.recv(1)
                if not byte:
                    break
                line += byte
        found.append(line.split()[1].decode() if line.endswith(b"\r\n") else None)
    return found


def timed_get(port, path):
    """(status, seconds) of GET `path`; (None, seconds) if it got no answer in 30 s."""
    began = time.monotonic()
    try:
        status = fetch(port, "GET", path, timeout=30)[0]
    except OSError:
        status = None
    return status, time.monotonic() - began


def unread_bytes(server_port, client):
    """What the server sent that `client` left in its receive queue; None once the connection
    is gone (/proc/net/tcp, the client's end: its tx_queue:rx_queue field)."""
    fields = tcp_connection(client.getsockname()[1], server_port)
    return None if fields is None else int(fields[4].split(":")[1], 16)


@pytest.mark.parametrize("threads", [None, 4], ids=["64-threads", "4-threads"])
def test_clients_that_never_read_their_responses_leave_the_process_answering(
    deployed_project, tmp_path, threads
):
    """32 clients that never read a 4 MiB response, and 4 open event streams: meanwhile the
    health probe, an async view, a sync view and one using the database answer at once (the
    old pooled handler's process stopped answering). With 4 threads, as with the default 64."""
    variables = {"ASGI_REQUEST_THREADS": threads} if threads else {}
    with (
        start_production_server(deployed_project, tmp_path / "server.log", **variables) as server,
        contextlib.ExitStack() as clients,
    ):
        stalled = [
            clients.enter_context(send_request(server.port, "/probe/large", receive_buffer=4096))
            for _ in range(32)
        ]
        streams = [
            clients.enter_context(send_request(server.port, "/probe/events?interval=0.2"))
            for _ in range(4)
        ]
        # Every view ran and its response started: the server is now stuck sending.
        started = statuses(stalled + streams, seconds=20)
        time.sleep(0.5)  # for the responses to fill every buffer on their way
        latencies = {
            path: timed_get(server.port, path)
            for path in ("/healthz", "/probe/async", "/probe/sync", "/probe/database")
        }
        unread = [unread_bytes(server.port, client) for client in stalled]
        # The event streams still flow.
        streams[0].settimeout(10)
        streamed, deadline = b"", time.monotonic() + 10
        with contextlib.suppress(OSError):
            while b"data: " not in streamed and time.monotonic() < deadline:
                chunk = streams[0].recv(1024)
                if not chunk:
                    break
                streamed += chunk
    print(
        f"\n{deployed_project.answers['server']}, {threads or 'default'} threads: "
        + ", ".join(
            f"{path} {status} in {took:.3f} s" for path, (status, took) in latencies.items()
        )
    )
    assert started == ["200"] * 36, "the process stopped answering"
    assert {path: status for path, (status, _) in latencies.items()} == dict.fromkeys(
        latencies, 200
    )
    assert max(took for _, took in latencies.values()) < ANSWERED_WITHIN, latencies
    # Still connected, with unread bytes: they stalled, and the server did not drop them.
    assert all(count is not None and count > 0 for count in unread), unread
    assert b"data: " in streamed


def test_state_left_in_a_request_thread_is_never_seen_again(deployed_project, tmp_path):
    """A request leaves an attribute on a threading.local, on django.db.connection and on its
    thread (from a sync view, and from an async one through sync_to_async): no request after
    it or beside it sees any."""
    with start_production_server(deployed_project, tmp_path / "server.log") as server:
        sequential = []
        for number in range(20):
            view = "leave-state" if number % 2 else "leave-state-from-async"
            assert fetch(server.port, "GET", f"/probe/{view}?label=s{number}")[0] == 200
            sequential += [get_json(server.port, "/probe/state") for _ in range(2)]
        paths = [
            f"/probe/{view}?label=c{number}"
            for number in range(40)
            for view in ("leave-state", "state", "leave-state-from-async", "state")
        ]
        with ThreadPoolExecutor(8) as pool:
            concurrent = list(pool.map(lambda path: fetch(server.port, "GET", path), paths))
    clean = {"local": None, "connection": None, "thread": None}
    assert [status for status, _ in sequential] == [200] * 40
    assert [status for status, _, _ in concurrent] == [200] * len(paths)
    seen = [body for _, body in sequential] + [
        json.loads(body)
        for (_, _, body), path in zip(concurrent, paths, strict=True)
        if path.startswith("/probe/state")
    ]
    assert len(seen) == 40 + 80
    assert [state for state in seen if state != clean] == []
    assert server.log_problems() == []


def test_a_transaction_left_open_harms_no_later_request(deployed_project, tmp_path):
    """A view enters transaction.atomic() without leaving it, and queries: the next 30 requests
    that use the database all answer 200 (the old pooled handler failed 26 of 30), and so do
    those of a concurrent mix of both."""
    with start_production_server(deployed_project, tmp_path / "server.log") as server:
        poisoning = fetch(server.port, "GET", "/probe/open-transaction")[0]
        after = [fetch(server.port, "GET", "/probe/database")[0] for _ in range(30)]
        paths = ["/probe/open-transaction", *["/probe/database"] * 5] * 5
        with ThreadPoolExecutor(6) as pool:
            mixed = list(pool.map(lambda path: fetch(server.port, "GET", path)[0], paths))
        last = [fetch(server.port, "GET", "/probe/database")[0] for _ in range(10)]
    assert poisoning == 200
    assert after == [200] * 30
    assert mixed == [200] * len(paths)
    assert last == [200] * 10
    assert server.log_problems() == []


def ran(hold_dir):
    """The names of the /probe/hold requests whose view ran, sorted."""
    path = hold_dir / "ran"
    return sorted(path.read_text().split()) if path.exists() else []


def hold_both_threads(server, pool, hold_dir):
    """Two /probe/hold requests, each holding one of the 2 threads until hold_dir/release."""
    held = [
        pool.submit(fetch, server.port, "GET", f"/probe/hold?name=held-{n}", timeout=40)
        for n in range(2)
    ]
    wait_for(lambda: ran(hold_dir) == ["held-0", "held-1"], 10, "both threads held")
    return held


@contextlib.contextmanager
def server_with_two_threads(project, tmp_path, queue_timeout):
    """The production server with ASGI_REQUEST_THREADS=2, and the folder /probe/hold waits on."""
    hold_dir = tmp_path / "hold"
    hold_dir.mkdir()
    variables = {"ASGI_REQUEST_THREADS": 2, "ASGI_REQUEST_QUEUE_TIMEOUT": queue_timeout}
    log = tmp_path / "server.log"
    with start_production_server(project, log, PROBE_HOLD_DIR=hold_dir, **variables) as server:
        yield server, hold_dir


def test_past_its_threads_a_request_queues_then_gets_503_with_retry_after(
    deployed_project, tmp_path
):
    """With both threads held, a request waits ASGI_REQUEST_QUEUE_TIMEOUT and gets 503 with
    Retry-After (the probes answer meanwhile); once they are free, requests succeed again."""
    with (
        server_with_two_threads(deployed_project, tmp_path, queue_timeout=1) as (server, hold_dir),
        ThreadPoolExecutor(2) as pool,
    ):
        try:
            held = hold_both_threads(server, pool, hold_dir)
            healthz = timed_get(server.port, "/healthz")
            began = time.monotonic()
            status, headers, _ = fetch(server.port, "GET", "/probe/sync", timeout=30)
            refused_after = time.monotonic() - began
        finally:
            (hold_dir / "release").touch()
        held_statuses = [future.result(timeout=40)[0] for future in held]
        after = [fetch(server.port, "GET", "/probe/sync")[0] for _ in range(5)]
    print(f"\n503 after {refused_after:.2f} s; /healthz meanwhile in {healthz[1]:.3f} s")
    assert healthz[0] == 200
    assert (status, headers["Retry-After"]) == (503, "1")
    assert 0.9 < refused_after < 1 + ANSWERED_WITHIN
    assert held_statuses == [200, 200]
    assert after == [200] * 5
    [problem] = server.log_problems()
    assert "Service busy (2 request threads running, 0 queued): /probe/sync" in problem


def test_a_queued_request_whose_client_left_never_runs(deployed_project, tmp_path):
    """With both threads held, 4 requests queue and their clients close the connection, then 2
    more queue and wait: once the threads are free, these 2 run, the 4 never do."""
    with (
        server_with_two_threads(deployed_project, tmp_path, queue_timeout=30) as (server, hold_dir),
        ThreadPoolExecutor(4) as pool,
        contextlib.ExitStack() as clients,
    ):
        try:
            held = hold_both_threads(server, pool, hold_dir)
            leaving = [
                clients.enter_context(send_request(server.port, f"/probe/hold?name=gone-{n}"))
                for n in range(4)
            ]
            ports = [client.getsockname()[1] for client in leaving]

            def read_by_server(port):
                connection = tcp_connection(server.port, port)
                return connection is not None and connection[4].endswith(":00000000")

            wait_for(lambda: all(map(read_by_server, ports)), 10, "the requests read")
            time.sleep(0.5)  # for each to reach the queue
            kept = [
                pool.submit(fetch, server.port, "GET", f"/probe/hold?name=kept-{n}", timeout=40)
                for n in range(2)
            ]
            for client in leaving:
                client.close()
            time.sleep(1.5)  # for the server to see them go
        finally:
            (hold_dir / "release").touch()
        held_statuses = [future.result(timeout=40)[0] for future in held]
        kept_statuses = [future.result(timeout=40)[0] for future in kept]
        after = [fetch(server.port, "GET", "/probe/sync")[0] for _ in range(3)]
    assert held_statuses == [200, 200]
    assert kept_statuses == [200, 200]
    assert after == [200] * 3
    assert ran(hold_dir) == ["held-0", "held-1", "kept-0", "kept-1"]
    assert server.log_problems() == []


def test_clients_that_leave_before_their_answer_leave_no_error_behind(deployed_project, tmp_path):
    """Ten times, 64 clients send a request and close their connection before the answer,
    while two threads serve: most requests are queued when their client leaves, some running.
    Nothing is logged (a request whose queued call was cancelled under it ended as a cancelled
    task, which the server logged as "Exception in ASGI application" with a traceback), and
    the server answers as before."""
    with server_with_two_threads(deployed_project, tmp_path, queue_timeout=30) as (server, _):
        for _ in range(10):
            clients = [send_request(server.port, "/probe/sync") for _ in range(64)]
            time.sleep(0.05)
            for client in clients:
                client.close()
        time.sleep(1)
        after = [fetch(server.port, "GET", "/probe/sync")[0] for _ in range(3)]
    assert after == [200] * 3
    assert server.log_problems() == []


def test_sync_views_that_call_their_own_server_do_not_deadlock(deployed_project, tmp_path):
    """40 at once, each waiting on a request to the same process: every one is answered (a pool
    of 32 reused threads deadlocked here, and Django's own handler answers all)."""
    with (
        start_production_server(deployed_project, tmp_path / "server.log") as server,
        ThreadPoolExecutor(40) as pool,
    ):
        answers = list(
            pool.map(lambda _: get_json(server.port, "/probe/call-self", timeout=60), range(40))
        )
    assert answers == [(200, {"inner": 200})] * 40


def test_a_full_temporary_directory_refuses_the_upload_and_no_one_else(deployed_project, tmp_path):
    """The server's temporary directory, where bodies past FILE_UPLOAD_MAX_MEMORY_SIZE (2.5 MB)
    are spooled, is an 8 MiB tmpfs of its own: a 9.5 MiB upload finds it full and gets 507,
    what it wrote is deleted, and everyone else is answered as before."""
    spool = tmp_path / "spool"
    spool.mkdir()
    mounted = f"mount -t tmpfs -o size=8m tmpfs {spool}"
    command = f"unshare --mount sh -c '{mounted} && exec {procfile_command(deployed_project.path)}'"
    env = deployed_project.probe_env(PORT=free_port(), TMPDIR=str(spool))

    with Server(deployed_project.path, command, env, tmp_path / "server.log") as server:
        # The tmpfs as the server sees it, from its own mount namespace.
        seen = os.statvfs(f"/proc/{server.process.pid}/root{spool}")
        assert seen.f_blocks * seen.f_frsize == 8 * 1024 * 1024

        def used():
            found = os.statvfs(f"/proc/{server.process.pid}/root{spool}")
            return (found.f_blocks - found.f_bfree) * found.f_frsize

        answer, _ = post_body(server.port, 19 * 512 * 1024)
        if deployed_project.answers["server"] == "daphne":
            # daphne stores the body itself before the application runs, and closes the
            # connection of the body it cannot store (README.md).
            assert answer is None
        else:
            assert answer is not None and answer.split()[1] == "507"
        wait_for(lambda: used() == 0, 5, "the spooled part deleted")
        # The others: a small body, a body spooled to disk, a probe.
        assert post_body(server.port, 64 * 1024)[0].split()[1] == "403"  # Django's CSRF check
        assert post_body(server.port, 3 * 1024 * 1024)[0].split()[1] == "403"
        assert fetch(server.port, "GET", "/healthz")[0] == 200
