"""
Scaling out and backing services coming and going, for every server: rooms shared across
processes and workers, a Redis that goes away and comes back, a PostgreSQL that restarts.
Each test runs its own redis-server or PostgreSQL.
"""

import contextlib
import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import websockets
from redis import Redis

from harness import fetch, get_json, receive_json, tcp_connection, wait_for, websocket
from matrix import OPTIONS, chat_answers, only_when
from projects import bake, deploy, start_production_server
from services import database

pytestmark = pytest.mark.slow

REDIS_ANSWERS = [chat_answers(server) for server in OPTIONS["server"]]


@pytest.fixture(params=REDIS_ANSWERS, ids=lambda answers: answers["server"])
def redis_project(request, deployed_chat_project):
    return deployed_chat_project(request.param)


def start(project, redis, log, **variables):
    return start_production_server(project, log, REDIS_URL=redis.url, **variables)


def chat(sender, *receivers, text):
    sender.send(json.dumps({"message": text}))
    for client in (sender, *receivers):
        assert receive_json(client)["message"] == text


def test_two_server_processes_share_rooms(redis_project, own_redis, tmp_path):
    with (
        start(redis_project, own_redis, tmp_path / "first.log") as first,
        start(redis_project, own_redis, tmp_path / "second.log") as second,
        websocket(first) as alice,
        websocket(second) as bob,
    ):
        chat(alice, bob, text="from the first process")
        chat(bob, alice, text="from the second process")
    assert first.log_problems() == [] and second.log_problems() == []


def worker_of(server, client):
    """The pid of the worker process holding `client`'s connection (read from /proc)."""
    inode = tcp_connection(server.port, client.socket.getsockname()[1])[9]
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if fd.readlink().name == f"socket:[{inode}]":
                return int(fd.parts[2])
        except OSError:
            continue
    raise AssertionError("no process holds the connection")


# daphne has no workers; hypercorn runs without (README.md explains why).
@only_when(lambda answers: answers["server"] not in ("daphne", "hypercorn"))
def test_workers_of_one_server_share_rooms(redis_project, own_redis, tmp_path):
    with (
        start(redis_project, own_redis, tmp_path / "workers.log", WEB_CONCURRENCY=2) as server,
        contextlib.ExitStack() as clients_open,
    ):
        clients = []
        # Connect until the clients are spread over both workers (bounded).
        for _ in range(16):
            clients.append(clients_open.enter_context(websocket(server)))
            if len({worker_of(server, client) for client in clients}) == 2:
                break
        assert len({worker_of(server, client) for client in clients}) == 2
        chat(clients[0], *clients[1:], text="to every worker")
        chat(clients[-1], *clients[:-1], text="and back")
    assert server.log_problems() == []


def test_a_redis_outage_degrades_and_recovers_without_a_restart(redis_project, own_redis, tmp_path):
    with start(redis_project, own_redis, tmp_path / "outage.log") as server:
        with websocket(server, "/ws/rooms/outage/") as alice:
            chat(alice, text="before")

            own_redis.stop()
            # HTTP goes on; readiness says what is down.
            assert get_json(server.port, "/healthz") == (200, {"status": "ok"})
            wait_for(lambda: get_json(server.port, "/readyz")[0] == 503, 10, "readyz 503")
            assert get_json(server.port, "/readyz")[1] == {
                "status": "unavailable",
                "checks": {"database": "ok", "static files": "ok", "redis": "down"},
            }
            # A message sent meanwhile: an error frame, never a hang.
            began = time.monotonic()
            alice.send(json.dumps({"message": "during"}))
            assert "error" in receive_json(alice)
            assert time.monotonic() - began < 15

            # A new connection meanwhile is refused cleanly: 403, never a 500 or a hang.
            with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                with websocket(server, "/ws/rooms/outage/"):
                    pass
            assert refused.value.response.status_code == 403

            own_redis.start()
            wait_for(lambda: get_json(server.port, "/readyz")[0] == 200, 15, "readyz 200")
            chat(alice, text="after")

        # New connections and messages work again, with the same server process.
        with websocket(server, "/ws/rooms/outage/") as bob:
            chat(bob, text="new")
        assert server.process.poll() is None
    assert not any("500" in line for line in server.log.splitlines() if "WebSocket" in line)


def messages_until(client, last, seconds=10):
    """The texts `client` receives up to and including `last`."""
    texts, deadline = [], time.monotonic() + seconds
    while not texts or texts[-1] != last:
        texts.append(receive_json(client, timeout=max(0.1, deadline - time.monotonic()))["message"])
    return texts


def test_a_frozen_redis_refuses_handshakes_quickly_and_no_message_arrives_twice(
    redis_project, own_redis, tmp_path
):
    """Redis stopped (SIGSTOP), not dead: connections wait on it instead of failing. A new
    handshake is refused within the consumers' 2 s; a message gets an error frame with its id,
    as it may still go out when Redis wakes, and sent again with that id it reaches each member
    once."""
    with start(redis_project, own_redis, tmp_path / "frozen.log") as server:
        with websocket(server, "/ws/rooms/frozen/") as alice:
            with websocket(server, "/ws/rooms/frozen/") as bob:
                chat(alice, bob, text="before")
                own_redis.process.send_signal(signal.SIGSTOP)
                try:
                    began = time.monotonic()
                    alice.send(json.dumps({"message": "during"}))
                    unconfirmed = receive_json(alice, timeout=10)
                    answered = time.monotonic() - began
                    began = time.monotonic()
                    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                        with websocket(server, "/ws/rooms/frozen/"):
                            pass
                    waited = time.monotonic() - began
                finally:
                    own_redis.process.send_signal(signal.SIGCONT)
                print(f"\nfrozen: error frame after {answered:.2f} s, refused after {waited:.2f} s")
                assert refused.value.response.status_code == 403 and waited < 3
                assert "error" in unconfirmed and answered < 3
                alice.send(json.dumps({"message": "during", "id": unconfirmed["id"]}))
                alice.send(json.dumps({"message": "after"}))
                for member in (alice, bob):
                    assert messages_until(member, "after") == ["during", "after"]


def test_every_first_message_in_a_fresh_room_comes_back(redis_project, own_redis, tmp_path):
    """100 clients at once, each joining a room no one is in and speaking at once: the room's
    subscription is in place before the handshake completes, so no first message is lost."""

    def first_message_echoed(number):
        with websocket(server, f"/ws/rooms/fresh-{number}/") as client:
            client.send(json.dumps({"message": f"first {number}"}))
            with contextlib.suppress(TimeoutError):
                return receive_json(client, timeout=5)["message"] == f"first {number}"
        return False

    with start(redis_project, own_redis, tmp_path / "fresh.log") as server:
        with ThreadPoolExecutor(100) as pool:
            echoed = list(pool.map(first_message_echoed, range(300)))
    assert echoed.count(False) == 0


# Redis goes away for this long, and nobody connects meanwhile: a connection made during
# the outage, or a probe of /readyz after it, makes the layer subscribe again and can hide a
# receive loop that never comes back by itself.
OUTAGE_SECONDS = 5


def heard_by_all(sender, clients, seconds):
    """Send from `sender` every half second until every client has heard it; False after
    `seconds`. Pub/sub keeps nothing: what is sent before a process resubscribes is lost."""
    deadline = time.monotonic() + seconds
    waiting = set(range(len(clients)))
    while waiting and time.monotonic() < deadline:
        sender.send(json.dumps({"message": "anyone?"}))
        time.sleep(0.5)
        for number in list(waiting):
            with contextlib.suppress(TimeoutError):
                while receive_json(clients[number], timeout=0.01)["message"] != "anyone?":
                    pass
                waiting.discard(number)
    return not waiting


@pytest.mark.parametrize("processes", [1, 2])
def test_open_sockets_hear_their_room_again_after_a_redis_restart(
    redis_project, own_redis, tmp_path, processes
):

    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(start(redis_project, own_redis, tmp_path / f"{number}.log"))
            for number in range(processes)
        ]
        clients = [
            stack.enter_context(websocket(server, "/ws/rooms/restart/"))
            for server in servers
            for _ in range(2)
        ]
        chat(clients[0], *clients[1:], text="before")

        own_redis.stop()
        time.sleep(OUTAGE_SECONDS)
        own_redis.start()

        # Every process's clients hear every other process's again, with no help.
        for sender in clients[::2]:
            assert heard_by_all(sender, clients, 10)
        for server in servers:
            assert get_json(server.port, "/readyz")[0] == 200
        assert all(server.process.poll() is None for server in servers)


@pytest.fixture(scope="session", params=OPTIONS["server"])
def pooled_bake(request, cookies_session):
    """A PostgreSQL project per server, baked once per run."""
    answers = {
        "server": request.param,
        "websockets": False,
        "channel_layer": "in-memory",
        "database": "postgresql",
    }
    return bake(cookies_session, answers, project_name="Pooled")


@pytest.fixture
def pooled_project(pooled_bake, own_postgres):
    """The PostgreSQL project, deployed on a database of its own."""
    with database(own_postgres.url) as database_url:
        pooled_bake.database_url = database_url
        deploy(pooled_bake)
        yield pooled_bake


def test_pooled_connections_survive_a_database_restart(pooled_project, own_postgres, tmp_path):
    """No request fails because the pool lent it a connection that the restart closed."""
    with start_production_server(pooled_project, tmp_path / "server.log") as running:
        # Fill the pool: its connections are open to the database when it restarts.
        before = [fetch(running.port, "GET", "/probe/database")[0] for _ in range(20)]
        own_postgres.restart()
        after = [fetch(running.port, "GET", "/probe/database")[0] for _ in range(40)]
    assert before == [200] * 20
    assert after == [200] * 40, after


def test_a_database_out_of_connections_delays_no_page_that_does_not_use_it(
    pooled_project, own_postgres, tmp_path
):
    """PostgreSQL refuses new connections (another client took them all): 150 requests that need
    one wait in the pool, at most DATABASE_POOL_MAX_WAITING of them, and fail; a page that never
    queries the database is answered meanwhile as at any other time."""
    log, hold = tmp_path / "server.log", tmp_path / "hold"
    hold.mkdir()
    with start_production_server(pooled_project, log, PROBE_HOLD_DIR=hold) as running:
        assert fetch(running.port, "GET", "/probe/database")[0] == 200
        taken, holders = [], []
        try:
            with contextlib.suppress(psycopg.OperationalError):  # "too many clients already"
                for _ in range(200):
                    taken.append(psycopg.connect(pooled_project.database_url, autocommit=True))
            # The connections the pool opened before, each held by a request.
            pooled = (
                taken[0]
                .execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND NOT pid = ANY(%s)",
                    [[connection.info.backend_pid for connection in taken]],
                )
                .fetchone()[0]
            )
            for number in range(pooled):
                path = f"/probe/hold?name=holder-{number}&database&seconds=20"
                request = (running.port, "GET", path, None, None, 30)
                holders.append(threading.Thread(target=fetch, args=request))
                holders[-1].start()
            wait_for(
                lambda: (
                    (hold / "ran").exists() and len((hold / "ran").read_text().split()) == pooled
                ),
                10,
                "the holding requests",
            )
            statuses = []

            def needs_the_database():
                with contextlib.suppress(OSError):
                    statuses.append(fetch(running.port, "GET", "/probe/database", timeout=30)[0])

            waiting = [threading.Thread(target=needs_the_database) for _ in range(150)]
            for request in waiting:
                request.start()
            time.sleep(1)  # every one of them has reached the pool
            began = time.monotonic()
            assert fetch(running.port, "GET", "/probe/sync")[0] == 200
            answered = time.monotonic() - began
            for request in waiting:
                request.join(30)
        finally:
            (hold / "release").touch()
            for holder in holders:
                holder.join(30)
            for connection in taken:
                connection.close()
        print(
            f"\n{len(taken)}+{pooled} connections taken; a page without queries: {answered:.3f} s"
        )
        assert answered < 1
        assert statuses == [500] * 150
        # Once the database has connections again, so do requests.
        assert fetch(running.port, "GET", "/probe/database")[0] == 200


def test_members_that_leave_a_busy_room_leave_no_subscription_behind(
    redis_project, own_redis, tmp_path
):
    """Members that flood a room and leave, politely or not, while messages are still queued for
    them: every channel and group subscription is gone from Redis soon after."""
    flood = {"WEBSOCKET_MESSAGE_RATE": "1000", "WEBSOCKET_MESSAGE_BURST": "1000"}
    redis = Redis(port=own_redis.port, socket_timeout=5)
    with start(redis_project, own_redis, tmp_path / "server.log", **flood) as server:
        for _ in range(2):
            members = [websocket(server, "/ws/rooms/busy/") for _ in range(8)]
            with contextlib.ExitStack() as stack:
                clients = [stack.enter_context(member) for member in members]
                for client in clients:
                    for _ in range(10):
                        client.send(json.dumps({"message": "x" * 32_000}))
                for n, client in enumerate(clients):
                    if n % 2:
                        client.socket.close()  # Gone without a close frame.
        wait_for(lambda: redis.pubsub_channels() == [], 20, "no subscription left")
    assert "Traceback" not in server.log
