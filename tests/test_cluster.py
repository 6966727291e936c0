"""
Several hosts, for real: network namespaces on this machine (netlab.py) make two application
hosts, a Redis host, a load balancer host running HAProxy with the configuration of the
generated README, and a client host. Clients talk to the load balancer's address only; the
application hosts run the project's production Procfile command on their own addresses.
"""

import contextlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field

import netlab
import pytest
import websockets
from websockets.sync.client import connect as ws_connect

from harness import procfile_command
from matrix import OPTIONS, chat_answers
from services import find_binary, unavailable

pytestmark = pytest.mark.slow

APPS = ("app1", "app2")
PORT = 8000
# What one address tries to hold at the load balancer, and what the README's HAProxy lets it.
CROWD = 5000
PER_ADDRESS = 200
ROOM = "/ws/rooms/cluster/"
# A message must have reached every client connected over this long a window around it.
DELIVERY_WINDOW = 1.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    find_binary("haproxy", "HAProxy (Debian: apt-get install haproxy)")
    find_binary("redis-server", "Redis (Debian: apt-get install redis-server)")
    try:
        netlab.check_environment()
        netlab.cleanup_leftovers("tpl")
        network = netlab.Lab(prefix="tpl", workdir=tmp_path_factory.mktemp("lab")).start()
    except netlab.LabUnavailable as missing:
        unavailable(f"network namespaces: {missing}")
    try:
        for name in (*APPS, "redis", "lb", "client", "crowd"):
            network.add_host(name)
        redis = network["redis"]
        proc = redis.popen(
            [
                *("redis-server", "--bind", redis.address, "--port", "6379"),
                *("--save", "", "--appendonly", "no"),
                # The lab's own private network: Redis listens on it, not on loopback.
                *("--protected-mode", "no"),
            ]
        )
        network["app1"].wait_for_port(redis.address, 6379, proc=proc)
        yield network
    finally:
        network.close()


@pytest.fixture(params=OPTIONS["server"], scope="module")
def cluster_project(request, deployed_chat_project):
    return deployed_chat_project(chat_answers(request.param))


def documented_haproxy_config(project, lab, admin_socket):
    """The HAProxy configuration of the project's README, with the lab's addresses."""
    readme = (project.path / "README.md").read_text()
    config = re.search(r"```haproxy\n(.+?)```", readme, re.DOTALL).group(1)
    lb = lab["lb"].address
    config = config.replace("bind :443 ssl crt /etc/haproxy/site.pem", f"bind {lb}:80")
    for name in APPS:
        config = re.sub(rf"server {name} \S+", f"server {name} {lab[name].address}:{PORT}", config)
    # The tests read the servers' state from HAProxy's runtime socket.
    return config.replace(
        "global\n", f"global\n    stats socket {admin_socket} mode 600 level admin\n", 1
    )


def start_app(lab, project, name, **variables):
    """The project's production command on application host `name`, behind the balancer."""
    host = lab[name]
    env = project.probe_env(
        **{
            "HOST": host.address,
            "PORT": PORT,
            "REDIS_URL": f"redis://{lab['redis'].address}:6379/0",
            "DJANGO_ALLOWED_HOSTS": lab["lb"].address,
            "FORWARDED_ALLOW_IPS": lab["lb"].address,
            **variables,
        }
    )
    command = procfile_command(project.path)
    return host.popen(["/bin/sh", "-c", f"exec {command}"], env=env, cwd=project.path)


@dataclass
class Cluster:
    lab: netlab.Lab
    project: object
    haproxy: netlab.HAProxy
    apps: dict = field(default_factory=dict)

    @property
    def lb(self):
        return self.lab["lb"].address

    def start(self, name):
        host = self.lab[name]
        proc = start_app(self.lab, self.project, name)
        self.apps[name] = proc
        self.lab["client"].wait_for_port(host.address, PORT, timeout=40, proc=proc)
        try:
            self.haproxy.wait_until_backends("UP", [name], timeout=30)
        except TimeoutError as error:
            readyz = self.get("/readyz", host.address)
            raise AssertionError(f"{error}; /readyz: {readyz.status} {readyz.body!r}") from None

    def get(self, path, address=None):
        return self.lab["client"].http_get(
            address or self.lb, 80 if address is None else PORT, path
        )

    def room_sizes(self):
        """Clients in the test room, per application host, from each host's own channel layer."""
        sizes = {}
        for name in APPS:
            result = self.lab["client"].http_get(
                self.lab[name].address, PORT, "/probe/groups", headers={"Host": self.lb}
            )
            sizes[name] = json.loads(result.body).get("room.cluster", 0)
        return sizes


@pytest.fixture
def cluster(lab, cluster_project, tmp_path):
    admin = tmp_path / "haproxy.sock"
    config = tmp_path / "haproxy.cfg"
    config.write_text(documented_haproxy_config(cluster_project, lab, admin))
    lab["lb"].run(["haproxy", "-c", "-q", "-f", str(config)])
    proc = lab["lb"].popen(["haproxy", "-db", "-f", str(config)], log_path=tmp_path / "haproxy.log")
    lab["client"].wait_for_port(lab["lb"].address, 80, proc=proc)
    running = Cluster(
        lab, cluster_project, netlab.HAProxy(lab["lb"], 80, config, admin, proc, "app")
    )
    try:
        for name in APPS:
            running.start(name)
        yield running
    finally:
        for app in running.apps.values():
            app.stop(timeout=30)
        proc.stop()


class ChatClient:
    """A room member behind the load balancer that, like the demo page, reconnects by itself
    (0.2 s, then doubling up to 2 s) and keeps a log of what it saw, with times."""

    def __init__(self, cluster, name):
        self.cluster, self.name = cluster, name
        self.socket = None
        self.connected = []  # (opened, closed or None)
        self.received = {}  # message -> time
        self.echoed = {}  # own message -> time it came back
        self.close_codes = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        delay = 0.2
        while not self.stopping.is_set():
            try:
                sock = self.cluster.lab["client"].connect(self.cluster.lb, 80)
                connection = ws_connect(
                    f"ws://{self.cluster.lb}{ROOM}",
                    sock=sock,
                    # The page came through the load balancer, over HTTPS.
                    origin=f"https://{self.cluster.lb}",
                    open_timeout=5,
                    close_timeout=2,
                )
            except (OSError, websockets.exceptions.WebSocketException):
                time.sleep(delay)
                delay = min(2.0, delay * 2)
                continue
            delay = 0.2
            with connection:
                self.listen(connection)

    def listen(self, connection):
        self.socket = connection
        self.connected.append([time.monotonic(), None])
        try:
            while not self.stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    message = json.loads(connection.recv(timeout=0.2))["message"]
                    now = time.monotonic()
                    self.received.setdefault(message, now)
                    if message.startswith(f"{self.name}:"):
                        self.echoed.setdefault(message, now)
        except websockets.exceptions.ConnectionClosed as closed:
            self.close_codes.append(closed.rcvd.code if closed.rcvd else None)
        finally:
            self.connected[-1][1] = time.monotonic()

    def say(self, number):
        socket = self.socket
        if socket is not None and self.connected and self.connected[-1][1] is None:
            with contextlib.suppress(websockets.exceptions.WebSocketException, OSError):
                socket.send(json.dumps({"message": f"{self.name}:{number}"}))

    def connected_throughout(self, start, end):
        return any(
            opened <= start and (closed is None or closed >= end)
            for opened, closed in self.connected
        )

    def stop(self):
        self.stopping.set()
        self.thread.join(10)


def wait_until(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.1)


def test_sockets_spread_over_both_hosts_and_rooms_span_them(cluster):
    clients = [ChatClient(cluster, f"c{number}") for number in range(6)]
    try:
        wait_until(lambda: sum(cluster.room_sizes().values()) == len(clients), 20, "all joined")
        sizes = cluster.room_sizes()
        assert all(size > 0 for size in sizes.values()), sizes  # no stickiness, both hosts
        for client in clients:
            client.say(1)
        expected = {f"{client.name}:1" for client in clients}
        for client in clients:
            wait_until(
                lambda c=client: expected <= c.received.keys(), 10, f"{client.name} heard all"
            )
    finally:
        for client in clients:
            client.stop()


def test_a_rolling_restart_loses_no_one(cluster, tmp_path):
    clients = [ChatClient(cluster, f"r{number}") for number in range(6)]
    statuses, polling = [], threading.Event()

    def poll_http():
        while not polling.is_set():
            with contextlib.suppress(OSError):
                statuses.append(cluster.get("/").status)
            time.sleep(0.05)

    poller = threading.Thread(target=poll_http, daemon=True)
    poller.start()
    stop_talking = threading.Event()

    def talk():
        number = 0
        while not stop_talking.is_set():
            number += 1
            for client in clients:
                client.say(number)
            time.sleep(0.3)

    talker = threading.Thread(target=talk, daemon=True)
    try:
        wait_until(lambda: sum(cluster.room_sizes().values()) == len(clients), 20, "all joined")
        talker.start()
        time.sleep(2)
        for name in APPS:
            stopped = cluster.apps[name].stop(timeout=30)
            assert stopped is not None, f"{name} did not stop within 30 s"
            cluster.start(name)
            time.sleep(2)
        wait_until(
            lambda: sum(cluster.room_sizes().values()) == len(clients), 30, "all back in the room"
        )
        time.sleep(2)
    finally:
        stop_talking.set()
        if talker.is_alive():
            talker.join(5)
        polling.set()
        poller.join(5)
        for client in clients:
            client.stop()

    # Every message that came back to its sender reached every client connected throughout
    # the window around that moment.
    lost = []
    for sender in clients:
        for message, echoed in sender.echoed.items():
            window = (echoed - DELIVERY_WINDOW, echoed + DELIVERY_WINDOW)
            for client in clients:
                if client.connected_throughout(*window) and message not in client.received:
                    lost.append((message, client.name))
    sent = sum(len(client.echoed) for client in clients)
    report = tmp_path / "rolling-restart.json"
    report.write_text(
        json.dumps(
            {
                "messages": sent,
                "lost": lost,
                "close_codes": {c.name: c.close_codes for c in clients},
                "http": {str(s): statuses.count(s) for s in set(statuses)},
            }
        )
    )
    print(f"\n{cluster.project.answers['server']}: {report.read_text()}")
    assert sent > 50 and lost == [], report.read_text()
    assert statuses and not [status for status in statuses if status >= 500], report.read_text()


def test_a_client_whose_network_vanishes_leaves_its_room(lab, cluster_project):
    """No close frame, no reset: the client's network just goes. The server's sockets probe idle
    connections (keepalive, limits.py), so even in a quiet room it is noticed and leaves."""
    if "roamer" not in lab.hosts:
        lab.add_host("roamer")
    roamer, app = lab["roamer"], lab["app1"]
    site = f"{app.address}:{PORT}"
    timeout = 2  # WEBSOCKET_SEND_TIMEOUT: keepalive probes after that long idle
    proc = start_app(
        lab,
        cluster_project,
        "app1",
        DJANGO_ALLOWED_HOSTS=app.address,
        WEBSOCKET_SEND_TIMEOUT=timeout,
    )

    def room_size():
        result = lab["lb"].http_get(app.address, PORT, "/probe/groups", headers={"Host": site})
        return json.loads(result.body).get("room.cluster", 0)

    try:
        lab["lb"].wait_for_port(app.address, PORT, timeout=40, proc=proc)
        sock = roamer.connect(app.address, PORT)
        with ws_connect(f"ws://{site}{ROOM}", sock=sock, origin=f"http://{site}", close_timeout=1):
            wait_until(lambda: room_size() == 1, 10, "joined")
            roamer.set_link(up=False)
            try:
                vanished = time.monotonic()
                wait_until(lambda: room_size() == 0, 10 * timeout, "the room without it")
                print(f"\nleft its room {time.monotonic() - vanished:.1f} s after its network went")
            finally:
                roamer.set_link(up=True)
    finally:
        proc.stop(timeout=30)


def hold_connections(lab, request):
    """From the "crowd" host, CROWD connections to the load balancer, each sending `request`
    (nothing: silent) and never reading; bounded to 60 s. Returns the sockets."""

    def open_all():
        held, deadline = [], time.monotonic() + 60
        while len(held) < CROWD and time.monotonic() < deadline:
            try:
                sock = socket.create_connection((lab["lb"].address, 80), timeout=1)
                sock.sendall(request)
            except OSError:
                continue
            held.append(sock)
        return held

    return netlab.run_in_netns(lab["crowd"].netns, open_all, timeout=90)


def still_open(sockets):
    """The sockets the other end has not closed (nothing to read, no EOF, no reset)."""
    count = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            count += sock.recv(65536, socket.MSG_PEEK) != b""
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count


@pytest.mark.parametrize(
    "request_bytes",
    [b"", b"GET /healthz HTTP/1.1\r\nHost: crowd\r\n\r\n"],
    ids=["silent", "idle-keep-alive"],
)
def test_one_address_cannot_crowd_out_everyone_else(cluster, request_bytes):
    """One address opens 5,000 connections (sending nothing, or one request and then idling):
    the README's HAProxy keeps 200 of them and closes the rest, and a client elsewhere is
    answered at once."""
    held = hold_connections(cluster.lab, request_bytes)
    try:
        time.sleep(0.5)  # the load balancer's refusals arrive
        assert PER_ADDRESS / 2 <= still_open(held) <= PER_ADDRESS + 1
        began = time.monotonic()
        assert cluster.get("/healthz").status == 200
        waited = time.monotonic() - began
        print(f"\n{len(held)} from one address; /healthz from another in {waited:.3f} s")
        assert waited <= 1
    finally:
        for sock in held:
            sock.close()


def test_compression_is_never_agreed_through_the_load_balancer(cluster):
    """hypercorn agrees to permessage-deflate, which inflates before its size limit applies
    (README.md): the README's HAProxy removes the offer, on every server."""
    sock = cluster.lab["client"].connect(cluster.lb, 80)
    # The client offers compression (websockets does by default).
    with ws_connect(
        f"ws://{cluster.lb}{ROOM}", sock=sock, origin=f"https://{cluster.lb}", open_timeout=5
    ) as connection:
        assert "permessage-deflate" in connection.request.headers["Sec-WebSocket-Extensions"]
        assert "Sec-WebSocket-Extensions" not in connection.response.headers
