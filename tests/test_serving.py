"""
Every combination's production command (Procfile), running in production mode: what a user,
a browser, a proxy and a process manager see.
"""

import contextlib
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from urllib.parse import unquote, urlencode

import h2.config
import h2.connection
import h2.exceptions
import pytest
import websockets

from harness import (
    HTTPS,
    Server,
    fetch,
    free_port,
    get_json,
    post_body,
    procfile_command,
    receive_json,
    status_or_none,
    tcp_connection,
    wait_for,
    websocket,
)
from matrix import (
    once_per_server,
    once_per_server_with_websockets,
    only_when,
    with_websockets,
    without_websockets,
)
from projects import ADMIN_USER, start_production_server

pytestmark = pytest.mark.slow


def refused_status(server, path, **kwargs):
    """The HTTP status a WebSocket handshake on `path` is refused with."""
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        with websocket(server, path, **kwargs):
            pass
    return refused.value.response.status_code


def cookies(headers):
    return "\n".join(headers.get_all("Set-Cookie") or [])


def admin_session(port):
    """Sign in to the admin as a browser does, through the site's login page where the admin's
    sends it: returns the session cookie."""
    status, headers, _ = fetch(port, "GET", "/admin/login/?next=/admin/", headers=HTTPS)
    assert status == 302
    login = headers["Location"]
    assert login == "/accounts/login/?next=%2Fadmin%2F"
    status, headers, body = fetch(port, "GET", login, headers=HTTPS)
    assert status == 200
    csrf_cookie = re.search(r"csrftoken=([^;]+)", cookies(headers)).group(1)
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1).decode()
    form = urlencode(
        {
            "csrfmiddlewaretoken": token,
            "login": ADMIN_USER["username"],
            "password": ADMIN_USER["password"],
        }
    )
    status, headers, _ = fetch(
        port,
        "POST",
        login,
        headers={
            **HTTPS,
            "Origin": f"https://127.0.0.1:{port}",
            "Cookie": f"csrftoken={csrf_cookie}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        body=form,
    )
    assert (status, headers["Location"]) == (302, "/admin/"), "login refused"
    return re.search(r"sessionid=([^;]+)", cookies(headers)).group(1)


def test_the_server_starts_without_a_word_from_the_system_checks(production_server):
    assert not re.search(r"\b[a-z_]+\.[EW]\d{3}\b|System check", production_server.log)
    # Nor about HTTP/2, which daphne would speak over TLS only (the proxy's job here).
    assert "HTTP/2" not in production_server.log


def test_healthz_answers_any_host_over_plain_http(production_server):
    status, body = get_json(production_server.port, "/healthz", headers={"Host": "10.0.0.7"})

    assert (status, body) == (200, {"status": "ok"})


def test_plain_http_is_redirected_to_https(production_server):
    status, headers, _ = fetch(production_server.port, "GET", "/admin/", {"Host": "127.0.0.1"})

    assert status == 301
    assert headers["Location"] == "https://127.0.0.1/admin/"


def test_a_foreign_host_gets_400_and_one_warning_line(production_server):
    status, _, _ = fetch(production_server.port, "GET", "/", {**HTTPS, "Host": "evil.example"})

    assert status == 400
    logged = [line for line in production_server.log.splitlines() if "evil.example" in line]
    assert any('"level": "WARNING"' in line and "DisallowedHost" in line for line in logged)
    assert "Traceback" not in production_server.log


def test_readyz_reports_every_backing_service_ok(production_server, deployed_project):
    checks = {"database": "ok", "static files": "ok"}
    if deployed_project.redis_url:
        checks["redis"] = "ok"

    assert get_json(production_server.port, "/readyz") == (200, {"status": "ok", "checks": checks})


def unreachable_database(project, tmp_path):
    if project.answers["database"] == "postgresql":
        return f"postgres://postgres@127.0.0.1:{free_port()}/nowhere"  # nothing listens there
    # A path SQLite cannot open as a database file (a missing directory would stop start-up).
    (tmp_path / "a-directory").mkdir()
    return f"sqlite:///{tmp_path}/a-directory"


@only_when(lambda answers: not answers["websockets"])  # the server and the database matter
def test_readyz_names_an_unreachable_database(deployed_project, tmp_path):
    database_url = unreachable_database(deployed_project, tmp_path)
    with start_production_server(
        deployed_project, tmp_path / "log", DATABASE_URL=database_url
    ) as server:
        began = time.monotonic()
        status, body = get_json(server.port, "/readyz")
        assert time.monotonic() - began < 5  # the check gives up after 3 s
        assert status == 503
        assert body["status"] == "unavailable"
        assert body["checks"]["database"] == "down"
        assert get_json(server.port, "/healthz") == (200, {"status": "ok"})


def test_the_admin_stylesheet_is_served_compressed(production_server, deployed_project):
    staticfiles = deployed_project.path / "staticfiles" / "staticfiles.json"
    url = "/static/" + json.loads(staticfiles.read_text())["paths"]["admin/css/base.css"]

    status, headers, _ = fetch(
        production_server.port, "GET", url, headers={**HTTPS, "Accept-Encoding": "gzip"}
    )

    assert status == 200
    assert headers["Content-Type"].startswith("text/css")
    assert headers["Content-Encoding"] == "gzip"
    assert "immutable" in headers["Cache-Control"]


def test_an_admin_login_reads_and_writes_through_the_orm(production_server):
    session = admin_session(production_server.port)

    status, _, body = fetch(
        production_server.port, "GET", "/admin/", {**HTTPS, "Cookie": f"sessionid={session}"}
    )

    assert status == 200
    assert b"Site administration" in body


def test_proxy_headers_are_believed_from_trusted_proxies_only(production_server):
    forwarded = {**HTTPS, "X-Forwarded-For": "203.0.113.9"}
    port = production_server.port

    trusted = get_json(port, "/probe/client", headers=forwarded)
    # The same headers from another address (127.0.0.2 is not in FORWARDED_ALLOW_IPS).
    spoofed = get_json(port, "/probe/client", headers=forwarded, source="127.0.0.2")

    assert trusted == (200, {"address": "203.0.113.9", "scheme": "https"})
    assert spoofed == (200, {"address": "127.0.0.2", "scheme": "http"})


def first_line_of_answer(port, request, timeout=10):
    """Send raw bytes; the status line answered, or None if the server closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as client:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            client.sendall(request)
            answer = client.recv(200)
            return answer.split(b"\r\n")[0].decode() or None
    return None


GET_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@once_per_server
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(b"X-Big: " + b"a" * 1024 * 1024 + b"\r\n", id="one-1-MiB-header"),
        pytest.param(b"".join(b"X-%d: a\r\n" % n for n in range(100_000)), id="100000-headers"),
    ],
)
def test_an_oversized_header_section_is_refused(production_server, headers):
    answer = first_line_of_answer(production_server.port, GET_HEALTHZ + headers + b"\r\n")
    # daphne closes the connection on a line over its limit, without a word (README.md).
    assert answer is None or answer.split()[1] in ("400", "431")
    assert fetch(production_server.port, "GET", "/healthz")[0] == 200


@once_per_server
def test_unfinished_headers_hold_bounded_memory(production_server):
    """20 clients each trickle a header that never ends, up to 16 MiB: the server cuts them
    off early (uvicorn's default parser, httptools, held all of it: 20 x 16 MiB)."""
    before = production_server.memory_mib()
    clients, cut_off = [], 0
    try:
        for _ in range(20):
            client = socket.create_connection(("127.0.0.1", production_server.port), timeout=5)
            client.sendall(GET_HEALTHZ + b"X-Endless: ")
            clients.append(client)
        chunk = b"a" * 64 * 1024
        for _ in range(16 * 1024 * 1024 // len(chunk)):
            for index, client in enumerate(clients):
                if client is None:
                    continue
                try:
                    client.sendall(chunk)
                except OSError:  # reset by the server, or its buffer full for 5 s
                    client.close()
                    clients[index] = None
                    cut_off += 1
            if cut_off == len(clients):
                break
        grown = production_server.memory_mib() - before
    finally:
        for client in clients:
            if client is not None:
                client.close()
    assert cut_off == 20
    assert grown < 40, f"{grown:.0f} MiB more for 20 unfinished requests"


@once_per_server
def test_a_body_over_the_limit_gets_413(production_server, deployed_project):
    port, limit = production_server.port, 10 * 1024 * 1024  # REQUEST_MAX_BODY_BYTES
    if deployed_project.answers["server"] == "daphne":
        # daphne reads the whole body before the application runs (README.md).
        assert post_body(port, limit + 1)[0].split()[1] == "413"
        assert post_body(port, limit + 1, declared=False)[0].split()[1] == "413"
        return
    # Refused on its Content-Length, before the body is read.
    answer, sent = post_body(port, 50 * 1024 * 1024)
    assert answer.split()[1] == "413" and sent < limit
    # Without one, once the bytes received pass the limit.
    answer, sent = post_body(port, 50 * 1024 * 1024, declared=False)
    assert answer.split()[1] == "413" and sent < 2 * limit
    # Under the limit, the body reaches Django: here its CSRF check.
    assert post_body(port, limit - 1024)[0].split()[1] == "403"


@with_websockets
def test_everyone_in_a_room_receives_a_message(production_server):
    with websocket(production_server) as alice, websocket(production_server) as bob:
        alice.send(json.dumps({"message": "hello"}))

        assert receive_json(alice) == {"message": "hello", "user": None}
        assert receive_json(bob) == {"message": "hello", "user": None}


@with_websockets
def test_a_signed_in_users_messages_carry_their_username(production_server):
    session = admin_session(production_server.port)

    with websocket(production_server, headers={"Cookie": f"sessionid={session}"}) as admin:
        admin.send(json.dumps({"message": "hi"}))

        assert receive_json(admin) == {"message": "hi", "user": ADMIN_USER["username"]}


@with_websockets
@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "http://localhost:{port}", "http://127.0.0.1:1", None],
    ids=["foreign", "other-allowed-host", "other-port", "none"],
)
def test_handshakes_from_other_origins_are_refused_and_logged(
    production_server, deployed_project, origin
):
    origin = origin and origin.format(port=production_server.port)
    assert refused_status(production_server, "/ws/rooms/lobby/", origin=origin) == 403
    line = f"WebSocket Forbidden (origin {origin or '(none)'}): /ws/rooms/lobby/"
    wait_for(lambda: line in production_server.log, 5, "one warning line")
    # The server's access line, as the README's table gives it (granian: 101).
    access_line = REFUSED_HANDSHAKE_ACCESS_LINE[deployed_project.answers["server"]]
    wait_for(lambda: access_line in production_server.log, 5, "the access log's line")


# How each server's access log records a handshake the application refused with 403.
REFUSED_HANDSHAKE_ACCESS_LINE = {
    "uvicorn": '"WebSocket /ws/rooms/lobby/" 403',
    "daphne": '"WSREJECT /ws/rooms/lobby/"',
    "hypercorn": '"GET /ws/rooms/lobby/ 1.1" 403',
    "granian": '"- /ws/rooms/lobby/ HTTP/1.1" 101',
}


@with_websockets
@pytest.mark.parametrize("path", ["/ws/nowhere/", "/ws/rooms/a%20b/", "/ws/rooms/", "/"])
def test_handshakes_on_unknown_paths_are_refused_and_logged(production_server, path):
    assert refused_status(production_server, path) == 403
    line = f"WebSocket Not Found: {unquote(path)}"
    wait_for(lambda: line in production_server.log, 5, "one warning line")


@with_websockets
def test_an_oversized_message_is_refused_and_the_server_stays_up(
    production_server, deployed_project
):

    with websocket(production_server) as alice:
        alice.send("x" * (1024 * 1024 + 1))
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            alice.recv(timeout=10)
    # daphne drops the connection without a close frame (clients see 1006); granian has no limit
    # of its own, limits.py closes with 4009 (README.md).
    expected = {"daphne": None, "granian": 4009}.get(deployed_project.answers["server"], 1009)
    assert (closed.value.rcvd and closed.value.rcvd.code) == expected

    with websocket(production_server) as bob:
        bob.send(json.dumps({"message": "after"}))
        assert receive_json(bob)["message"] == "after"


# Whether the server agrees to compressed messages (permessage-deflate) when a client asks.
# A compressed message is limited only once inflated: a "compression bomb" of a few kilobytes
# inflates to gigabytes. uvicorn's is turned off in the Procfile; hypercorn offers no switch
# (README.md: the proxy in front removes the header).
NEGOTIATES_COMPRESSION = {"uvicorn": False, "daphne": False, "hypercorn": True, "granian": False}


@once_per_server_with_websockets
def test_compression_is_refused_where_the_server_allows(production_server, deployed_project):
    with websocket(production_server) as client:  # The client offers permessage-deflate.
        extensions = client.response.headers.get("Sec-WebSocket-Extensions") or ""
    negotiated = "permessage-deflate" in extensions
    assert negotiated == NEGOTIATES_COMPRESSION[deployed_project.answers["server"]]


@once_per_server_with_websockets
def test_one_members_large_message_closes_no_one(production_server):
    """Non-ASCII text near the limit goes out as UTF-8 (JSON's ASCII escapes made it three times
    larger, past daphne's limit on what it sends); a message whose broadcast would pass the
    limit gets an error frame, and every member stays connected."""
    members = [websocket(production_server, "/ws/rooms/large/") for _ in range(3)]
    with contextlib.ExitStack() as stack:
        alice, *others = [stack.enter_context(member) for member in members]
        text = "é" * 175_000
        alice.send(json.dumps({"message": text}, ensure_ascii=False))
        for member in (alice, *others):
            assert receive_json(member)["message"] == text
        alice.send(json.dumps({"message": "x" * (1024 * 1024 - 20)}))
        assert "too long" in receive_json(alice)["error"]
        alice.send(json.dumps({"message": "after"}))
        for member in (alice, *others):
            assert receive_json(member)["message"] == "after"


def rapid_reset(port, path, seconds):
    """HTTP/2 without TLS ("prior knowledge"), every stream cancelled as soon as it is opened,
    over connections opened one after another for `seconds`; returns the streams sent."""
    # As the proxy would forward a request that came over HTTPS: Django gets to the view.
    headers = [(":method", "GET"), (":scheme", "http"), (":authority", "localhost")]
    headers += [(":path", path), *((name.lower(), value) for name, value in HTTPS.items())]
    sent, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        connection.initiate_connection()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(connection.data_to_send())
                sock.settimeout(0.001)
                while time.monotonic() < deadline:
                    for _ in range(100):
                        stream = connection.get_next_available_stream_id()
                        connection.send_headers(stream, headers)
                        connection.reset_stream(stream)
                        sent += 1
                    sock.sendall(connection.data_to_send())
                    with contextlib.suppress(TimeoutError):
                        if not (data := sock.recv(65536)):
                            break
                        connection.receive_data(data)
        except (OSError, h2.exceptions.ProtocolError):
            pass  # refused, or closed by the server
        time.sleep(0.05)  # then another (a flood of connections is another test's attack)
    return sent


@once_per_server
def test_http2_rapid_reset_runs_no_view_and_leaves_the_server_answering(production_server):
    """Only hypercorn and granian speak HTTP/2 without TLS, and neither lets a cancelled stream
    run a view; the attacker costs the others nothing but closed connections (README.md)."""
    path = "/reset-stream-that-no-view-should-see"
    before = production_server.memory_mib()
    sent = []
    attackers = [
        threading.Thread(target=lambda: sent.append(rapid_reset(production_server.port, path, 5)))
        for _ in range(2)
    ]
    for attacker in attackers:
        attacker.start()
    for attacker in attackers:
        attacker.join(30)
    began = time.monotonic()
    assert fetch(production_server.port, "GET", "/healthz", timeout=10)[0] == 200
    recovered = time.monotonic() - began
    grown = production_server.memory_mib() - before
    print(
        f"\n{sum(sent)} streams reset in 5 s; then /healthz in {recovered:.3f} s, +{grown:.0f} MiB"
    )
    assert recovered < 5 and grown < 100
    # A view that ran would have logged its 404, as this request does.
    assert fetch(production_server.port, "GET", path, headers=HTTPS)[0] == 404
    logged = f"Not Found: {path}"
    wait_for(lambda: logged in production_server.log, 5, "the 404 logged")
    assert production_server.log.count(logged) == 1


# What an open, idle WebSocket costs a server process (README.md): granian's own buffers are
# several times the others'.
IDLE_WEBSOCKET_KIB = {"uvicorn": 64, "daphne": 64, "hypercorn": 64, "granian": 224}


@once_per_server_with_websockets
def test_an_idle_websocket_costs_what_the_readme_says(production_server, deployed_project):
    before = production_server.memory_mib()
    with contextlib.ExitStack() as sockets:
        for number in range(1000):
            sockets.enter_context(websocket(production_server, f"/ws/rooms/idle-{number % 20}/"))
        each = (production_server.memory_mib() - before) * 1024 / 1000
    print(f"\nan idle WebSocket: {each:.0f} KiB")
    assert each <= IDLE_WEBSOCKET_KIB[deployed_project.answers["server"]]


def closed_by_server(server_port, client_port):
    """The server's end of a connection is gone, or closed: TIME_WAIT, FIN_WAIT2 or CLOSE."""
    fields = tcp_connection(server_port, client_port)
    return fields is None or fields[3] in ("05", "06", "07")


@with_websockets
def test_a_flood_of_messages_is_cut_off_with_4008(production_server, deployed_project):
    """10,000 messages as fast as the client can: its close frame, then its connection ends
    (closed by the server, whatever the client does next) within the send timeout (20 s)."""
    with websocket(production_server, "/ws/rooms/flood/") as flooder:
        client_port = flooder.socket.getsockname()[1]
        # The burst allows 30; the server may cut the connection while the rest is sent.
        began = time.monotonic()
        with contextlib.suppress(OSError, websockets.exceptions.ConnectionClosed):
            for _ in range(10_000):
                flooder.send(json.dumps({"message": "spam"}))
        # The burst, and what the rate (10 a second) gives back while the flood arrives.
        allowed = 30 + 10 * (time.monotonic() - began + 1)
        heard = 0
        with pytest.raises((websockets.exceptions.ConnectionClosed, TimeoutError)) as cut_off:
            while True:
                flooder.recv(timeout=5)
                heard += 1
        wait_for(
            lambda: closed_by_server(production_server.port, client_port),
            20,
            "the server closing the flooder's connection",
        )
    assert heard <= allowed
    assert cut_off.type is not TimeoutError, "no close frame, and the connection still open"
    if deployed_project.answers["server"] == "granian":
        # granian may reset a connection it closes while the client is still sending: the
        # close frame is lost (README.md).
        assert cut_off.value.rcvd is None or cut_off.value.rcvd.code == 4008
    else:
        assert cut_off.value.rcvd.code == 4008

    with websocket(production_server, "/ws/rooms/after-the-flood/") as bob:
        bob.send(json.dumps({"message": "still serving"}))
        assert receive_json(bob) == {"message": "still serving", "user": None}


def send_raw_text_frame(client, payload):
    """A text frame as a client sends it (masked), whatever its bytes: for invalid UTF-8."""
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    client.socket.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)


@with_websockets
def test_invalid_utf8_closes_the_connection_without_a_traceback(deployed_project, tmp_path):
    with start_production_server(deployed_project, tmp_path / "server.log") as server:
        with websocket(server) as alice:
            send_raw_text_frame(alice, b"\xff\xfe not UTF-8")
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                alice.recv(timeout=10)
        # Closed, with 1007 (invalid payload) or without a close frame, never with a 1011.
        assert closed.value.rcvd is None or closed.value.rcvd.code in (1005, 1007)
        with websocket(server) as bob:
            bob.send(json.dumps({"message": "still serving"}))
            assert receive_json(bob)["message"] == "still serving"
    assert "Traceback" not in server.log


def room_size(server, room):
    return get_json(server.port, "/probe/groups")[1].get(f"room.{room}", 0)


@with_websockets
def test_clients_that_vanish_without_a_close_frame_leave_their_room(production_server):
    path = "/ws/rooms/vanish/"
    with (
        websocket(production_server, path) as alive,
        websocket(production_server, path) as b,
        websocket(production_server, path) as c,
    ):
        assert room_size(production_server, "vanish") == 3
        for client in (b, c):
            # Gone without a close frame, as when a laptop lid shuts or a tab is killed.
            client.socket.shutdown(socket.SHUT_RDWR)
            client.socket.close()
        wait_for(lambda: room_size(production_server, "vanish") == 1, 10, "dead clients leaving")

        alive.send(json.dumps({"message": "anyone?"}))
        assert receive_json(alive) == {"message": "anyone?", "user": None}


def never_reading_client(server, path):
    """A WebSocket client with a tiny receive buffer that reads its handshake's answer and then
    nothing: a frozen or hostile client, or one behind a stalled network."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.settimeout(10)
    client.connect(("127.0.0.1", server.port))
    client.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Origin: http://127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    answer = b""
    while not answer.endswith(b"\r\n\r\n"):
        answer += client.recv(1)  # not a byte past the handshake
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return client


@once_per_server_with_websockets
def test_a_client_that_stops_reading_is_dropped_in_bounded_memory(deployed_project, tmp_path):
    """While a room's messages pile up for a client that reads nothing, the others go on; once
    the buffers are full, it is dropped WEBSOCKET_SEND_TIMEOUT later (README.md)."""
    timeout, room = 3, "stalled"
    log = tmp_path / "server.log"
    with start_production_server(deployed_project, log, WEBSOCKET_SEND_TIMEOUT=timeout) as server:
        stuck = never_reading_client(server, f"/ws/rooms/{room}/")
        stuck_port = stuck.getsockname()[1]
        try:
            with websocket(server, f"/ws/rooms/{room}/") as alice:
                before = server.memory_mib()
                message = {"message": "x" * 60_000, "user": None}
                began, sent = time.monotonic(), 0
                while tcp_connection(server.port, stuck_port):
                    assert time.monotonic() - began < 60, f"still connected after {sent} messages"
                    alice.send(json.dumps({"message": message["message"]}))
                    assert receive_json(alice) == message  # not held up by the stuck client
                    sent += 1
                    time.sleep(0.15)  # within the rate limit
                dropped_after = time.monotonic() - began
                grown = server.memory_mib() - before
                wait_for(lambda: room_size(server, room) == 1, 10, "the room without it")
                alice.send(json.dumps({"message": "after"}))
                assert receive_json(alice)["message"] == "after"
        finally:
            stuck.close()
    # About 3 MB of buffers fill at 400 kB/s, then the timeout runs.
    assert dropped_after < 8 + timeout + 10, f"dropped after {dropped_after:.1f} s"
    assert grown < 30, f"{grown:.0f} MiB more meanwhile"
    assert "Traceback" not in server.log


@without_websockets
def test_without_websockets_a_handshake_is_refused(production_server):
    assert refused_status(production_server, "/ws/rooms/lobby/") == 403


# Whether a request in flight when SIGTERM arrives completes (README.md documents daphne's).
FINISHES_REQUESTS_IN_FLIGHT = {"uvicorn": True, "hypercorn": True, "daphne": False, "granian": True}


def clean_exit_codes(server):
    # uvicorn re-raises the signal it caught: -15 is its clean exit. daphne on Python 3.11 can
    # crash in the garbage collector while exiting with a request in flight (README.md).
    if server == "daphne" and sys.version_info < (3, 12):
        return {0, -11}
    return {0, -15} if server == "uvicorn" else {0}


def test_sigterm_finishes_the_request_in_flight_and_leaves_a_clean_log(deployed_project, tmp_path):
    marker = tmp_path / "slow-request-started"
    server = start_production_server(
        deployed_project, tmp_path / "server.log", PROBE_SLOW_MARKER=marker
    )
    outcome = {}

    def slow_request():
        try:
            outcome["status"] = fetch(server.port, "GET", "/probe/slow?seconds=2")[0]
        except OSError as error:
            outcome["error"] = error

    in_flight = threading.Thread(target=slow_request)
    try:
        in_flight.start()
        wait_for(marker.exists, 10, "the slow request reaching the view")
        stopped = server.stop(timeout=10)
    finally:
        server.kill()
        in_flight.join(15)

    assert stopped is not None, "still running 10 s after SIGTERM"
    code, _ = stopped
    name = deployed_project.answers["server"]
    assert code in clean_exit_codes(name)
    assert (outcome.get("status") == 200) == FINISHES_REQUESTS_IN_FLIGHT[name], outcome
    assert server.log_problems() == []


# Procfile.dev is runserver on every server: here with PostgreSQL and Redis from .env, with and
# without WebSockets; with SQLite and the in-memory layer, the test below and test_first_hour.
@only_when(
    lambda answers: (
        answers["database"] == "postgresql"
        and (answers["channel_layer"] == "redis" or not answers["websockets"])
    )
)
def test_the_development_command_boots_and_reloads(deployed_project, tmp_path):
    env = deployed_project.development_env(PORT=free_port())
    urls = deployed_project.path / deployed_project.slug / "urls.py"
    original = urls.read_text()
    command = procfile_command(deployed_project.path, "Procfile.dev")
    dev = Server(deployed_project.path, command, env, tmp_path / "dev.log")
    try:
        if deployed_project.answers["websockets"]:
            with websocket(dev) as alice:
                alice.send(json.dumps({"message": "dev"}))
                assert receive_json(alice)["message"] == "dev"
        # Edit a route: the server must pick it up without a restart. The reloader polls file
        # times, and may take its first look after the edit: touch the file again if unseen,
        # less often than a restart takes.
        urls.write_text(original.replace('path("admin/"', 'path("edited/"'))
        began = touched = time.monotonic()
        # The admin's login answers from its new place (a redirect to the site's login).
        while status_or_none(dev.port, "/edited/login/") != 302:
            assert time.monotonic() < began + 40, f"no reload after 40 s:\n{dev.log}"
            time.sleep(0.5)
            if time.monotonic() > touched + 10:
                os.utime(urls)
                touched = time.monotonic()
    finally:
        dev.stop()
        urls.write_text(original)
    assert "Traceback" not in dev.log


# What an open WebSocket gets when runserver restarts the server, and when the production
# server is stopped (a deploy): 1012, "service restart", so that clients reconnect. daphne
# lets an application send no 1012: 4012 there (README.md).
SERVICE_RESTART = {"uvicorn": 1012, "daphne": 4012, "hypercorn": 1012, "granian": 1012}


def closed_for_a_restart(server, closed):
    """Whether a WebSocket was closed as README.md's table says `server` closes them when it
    stops: with SERVICE_RESTART; granian may stop before that close frame is out (None)."""
    code = closed.rcvd.code if closed.rcvd else None
    return code == SERVICE_RESTART[server] or (server == "granian" and code is None)


# A task enqueued in development, as a view enqueues one; its status once a worker ran it, or
# READY if none did within 30 s.
DEVELOPMENT_TASK = """
import time
from rooms.tasks import count_messages
result = count_messages.enqueue({room!r}, 1)
for _ in range(300):
    result.refresh()
    if result.status not in ("READY", "RUNNING"):
        break
    time.sleep(0.1)
print(result.status)
"""


def task_status_in_development(project, env, room):
    code = DEVELOPMENT_TASK.format(room=room)
    completed = project.manage("shell", "--no-imports", "-c", code, env=env)
    assert completed.returncode == 0, completed.stdout
    return completed.stdout.strip().splitlines()[-1]


def workers_of(server):
    """The background tasks' workers among the processes a server started."""
    return [pid for pid, command in server.session().items() if "tasks_worker" in command]


@once_per_server_with_websockets
def test_runserver_runs_the_server_and_restarts_it_for_code_only(deployed_project, tmp_path):
    """`manage.py runserver PORT`, as Django developers type it: the ASGI server, static files,
    WebSockets, and the background tasks' worker; writes to the database, a log or Redis'
    dump.rdb restart nothing; editing a view restarts the server, which closes an open
    WebSocket with 1012 rather than wait, and the worker. Stopped, it leaves no process."""
    project = deployed_project
    env = project.development_env(PORT=free_port())
    views = project.path / "rooms" / "views.py"
    original = views.read_text()
    routing = project.path / project.slug / "routing.py"
    routing_original = routing.read_text()
    written = [project.path / name for name in ("dump.rdb", "server.log")]
    command = "python manage.py runserver $PORT"
    with Server(project.path, command, env, tmp_path / "dev.log") as dev:
        try:
            assert fetch(dev.port, "GET", "/static/admin/css/base.css")[0] == 200
            # No second command: runserver runs the worker too.
            assert task_status_in_development(project, env, "before") == "SUCCESSFUL", dev.log
            [worker] = workers_of(dev)
            with websocket(dev) as alice:
                alice.send(json.dumps({"message": "hello"}))
                assert receive_json(alice)["message"] == "hello"
                for _ in range(3):
                    for path in written:
                        with path.open("ab") as data:
                            data.write(b"x" * 1000)
                    os.utime(project.path / "db.sqlite3")
                    time.sleep(1)
                alice.send(json.dumps({"message": "still here"}))
                assert receive_json(alice)["message"] == "still here"

                edited = re.sub(
                    r'return render\(request, "rooms/index\.html".*\)',
                    'return HttpResponse("edited view")',
                    original,
                )
                assert edited != original
                views.write_text(f"from django.http import HttpResponse\n{edited}")
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    while True:
                        alice.recv(timeout=20)
            assert closed_for_a_restart(project.answers["server"], closed.value), dev.log
            deadline = time.monotonic() + 30
            while True:
                try:
                    if fetch(dev.port, "GET", "/rooms/")[2] == b"edited view":
                        break
                except OSError:
                    pass  # restarting
                assert time.monotonic() < deadline, f"no reload after 30 s:\n{dev.log}"
                time.sleep(0.5)
            # The worker was restarted with the server: one, a new one, running the new code.
            wait_for(lambda: workers_of(dev) not in ([], [worker]), 30, "a new worker")
            assert task_status_in_development(project, env, "after") == "SUCCESSFUL", dev.log
            assert len(workers_of(dev)) == 1
            with websocket(dev) as bob:  # The page's reconnection finds the new server.
                bob.send(json.dumps({"message": "back"}))
                assert receive_json(bob)["message"] == "back"
                # A module only the server imports (the WebSocket routes) is watched too.
                routing.write_text(f"{routing_original}# edited\n")
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    while True:
                        bob.recv(timeout=20)
            assert closed_for_a_restart(project.answers["server"], closed.value), dev.log
        finally:
            views.write_text(original)
            routing.write_text(routing_original)
            for path in written:
                path.unlink(missing_ok=True)
        # SIGTERM to runserver alone, as a process manager sends it (Ctrl-C in a terminal
        # reaches the whole process group): the server and the worker stop with it.
        dev.process.send_signal(signal.SIGTERM)
        dev.process.wait(30)
        wait_for(lambda: not dev.session(), 30, "runserver's server and worker to stop")
    assert "Traceback" not in dev.log


# The grace period of the production commands (Procfile, hypercorn.toml).
GRACE_SECONDS = 25


@once_per_server_with_websockets
def test_sigterm_with_an_open_websocket(deployed_project, tmp_path):
    """Every open WebSocket gets its close frame, its connection ends, and the server exits
    within its grace period."""
    server = start_production_server(deployed_project, tmp_path / "server.log")
    stopped = {}
    try:
        with websocket(server) as alice, websocket(server) as bob:
            client_port = bob.socket.getsockname()[1]
            stopping = threading.Thread(
                target=lambda: stopped.update(result=server.stop(timeout=GRACE_SECONDS + 5))
            )
            stopping.start()
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                alice.recv(timeout=GRACE_SECONDS)
            stopping.join(GRACE_SECONDS + 10)
            gone = closed_by_server(server.port, client_port)
    finally:
        server.kill()
    assert closed_for_a_restart(deployed_project.answers["server"], closed.value), server.log
    assert stopped.get("result") is not None, f"still running {GRACE_SECONDS + 5} s after SIGTERM"
    assert stopped["result"][0] in clean_exit_codes(deployed_project.answers["server"])
    assert gone, "the server's end of a WebSocket is still open after it exited"
