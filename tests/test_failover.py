"""
Redis without a single point of failure: a primary, a replica and three Sentinels, and two
application processes that find Redis through the Sentinels (REDIS_SENTINELS). The primary is
killed while people chat; the Sentinels promote the replica, and the rooms work again without
restarting anything, while /readyz tells the truth throughout.
"""

import contextlib
import json
import subprocess
import time

import pytest
import redis

from harness import free_port, get_json, wait_for, websocket
from matrix import OPTIONS, chat_answers
from projects import start_production_server
from services import find_binary

pytestmark = pytest.mark.slow

MASTER = "mymaster"
# How long the Sentinels wait before they call the primary down, and the bound (seconds) within
# which rooms must work again after it is killed.
DOWN_AFTER_MS = 1000
RECOVERY_BOUND = 20


class RedisWithSentinels:
    """A primary and a replica, watched by three Sentinels (quorum 2), on loopback."""

    def __init__(self, directory):
        self.binary = find_binary("redis-server", "Redis (Debian: apt-get install redis-server)")
        self.directory = directory
        self.processes = {}
        self.primary, self.replica = free_port(), free_port()
        self.sentinels = [free_port() for _ in range(3)]

    def run(self, name, *args):
        self.processes[name] = subprocess.Popen(
            [self.binary, *args], stdout=subprocess.DEVNULL, cwd=self.directory
        )

    def start(self):
        common = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
        self.run("primary", "--port", str(self.primary), *common)
        replica_of = ("--replicaof", "127.0.0.1", str(self.primary))
        self.run("replica", "--port", str(self.replica), *common, *replica_of)
        for port in self.sentinels:
            config = self.directory / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
            )
            self.run(f"sentinel-{port}", str(config), "--sentinel")
        sentinel = redis.Redis(port=self.sentinels[0], socket_timeout=1)
        wait_for(
            lambda: self._ask(lambda: len(sentinel.sentinel_slaves(MASTER)) == 1),
            20,
            "the Sentinels seeing the replica",
        )

    @staticmethod
    def _ask(question):
        try:
            return question()
        except redis.RedisError:
            return False

    def primary_port(self):
        sentinel = redis.Redis(port=self.sentinels[0], socket_timeout=1)
        return int(sentinel.sentinel_get_master_addr_by_name(MASTER)[1])

    def kill(self, name):
        self.processes[name].kill()
        self.processes[name].wait(10)

    def stop(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
                process.wait(10)


@pytest.fixture
def sentinels(tmp_path):
    setup = RedisWithSentinels(tmp_path)
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()


@pytest.fixture(params=OPTIONS["server"])
def failover_project(request, deployed_chat_project):
    return deployed_chat_project(chat_answers(request.param))


def heard(client, text, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            if json.loads(client.recv(timeout=0.2)).get("message") == text:
                return True
    return False


def test_rooms_work_again_after_the_primary_dies(failover_project, sentinels, tmp_path):
    sentinel_addresses = ",".join(f"127.0.0.1:{port}" for port in sentinels.sentinels)
    variables = {
        "REDIS_SENTINELS": sentinel_addresses,
        "REDIS_SENTINEL_MASTER": MASTER,
        # Host and port are the Sentinels' to say: this one is wrong on purpose.
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                start_production_server(failover_project, tmp_path / f"{number}.log", **variables)
            )
            for number in (1, 2)
        ]
        alice = stack.enter_context(websocket(servers[0], "/ws/rooms/failover/"))
        bob = stack.enter_context(websocket(servers[1], "/ws/rooms/failover/"))
        alice.send(json.dumps({"message": "before"}))
        assert heard(alice, "before", 5) and heard(bob, "before", 5)

        sentinels.kill("primary")
        killed = time.monotonic()
        rounds, recovered = [], None
        while time.monotonic() - killed < RECOVERY_BOUND + 10:
            ready = [get_json(server.port, "/readyz")[0] == 200 for server in servers]
            text = f"after {len(rounds)}"
            with contextlib.suppress(OSError):
                alice.send(json.dumps({"message": text}))
            delivered = heard(alice, text, 2) and heard(bob, text, 2)
            rounds.append({"ready": ready, "delivered": delivered})
            if delivered and recovered is None:
                recovered = time.monotonic() - killed
            if (
                recovered is not None
                and len(rounds) > 3
                and all(r["delivered"] for r in rounds[-3:])
            ):
                break
        report = json.dumps({"recovered_after": recovered, "rounds": rounds})
        print(f"\n{failover_project.answers['server']}: {report}")

        assert recovered is not None and recovered < RECOVERY_BOUND, report
        assert sentinels.primary_port() == sentinels.replica
        # Whenever both processes said they were ready, rooms worked.
        assert all(r["delivered"] for r in rounds if all(r["ready"])), report
        assert all(server.process.poll() is None for server in servers)
