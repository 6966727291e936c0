"""
A worker process that crashes (kill -9), per server: uvicorn starts a new one and goes on
serving; granian stops, as it does for a worker that cannot start (restarting it is the process
manager's job: granian's own respawning loops on a worker that cannot start); servers without
workers die with it. Each stop is visible, for the process manager to start the server again.
"""

import os
import signal
import time
from pathlib import Path

import pytest

from harness import status_or_none, wait_for
from matrix import OPTIONS, chat_answers
from projects import start_production_server

pytestmark = pytest.mark.slow

# The servers whose production command runs worker processes under a supervisor, and whether
# it starts a new worker when one dies.
WITH_WORKERS = {"uvicorn": True, "granian": False}


@pytest.fixture(params=OPTIONS["server"])
def crash_project(request, deployed_chat_project):
    return deployed_chat_project(chat_answers(request.param))


def workers(pid):
    """The worker processes a supervisor started (its children, but multiprocessing's resource
    tracker), from /proc."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            parent = next(
                line.split()[1]
                for line in status.read_text().splitlines()
                if line.startswith("PPid:")
            )
            command = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, StopIteration):
            continue
        if parent == str(pid) and b"resource_tracker" not in command:
            found.append(int(status.parent.name))
    return found


def test_a_crashed_worker(crash_project, redis_server, tmp_path):
    name = crash_project.answers["server"]
    variables = {"REDIS_URL": redis_server.url, "WEB_CONCURRENCY": "2"}
    with start_production_server(crash_project, tmp_path / "server.log", **variables) as server:
        if name not in WITH_WORKERS:
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(10)
            # Dead and visibly so (-9): restart policies ("on-failure", Kubernetes) act on it.
            assert server.process.returncode == -signal.SIGKILL
            return
        wait_for(lambda: len(workers(server.process.pid)) == 2, 20, "two workers")
        before = set(workers(server.process.pid))
        victim = sorted(before)[0]
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        if not WITH_WORKERS[name]:
            server.process.wait(30)
            assert server.process.returncode == 1  # A failure, for restart policies.
            return
        wait_for(
            lambda: len(set(workers(server.process.pid)) - before) == 1,
            30,
            "a new worker",
            interval=0.05,
        )
        respawned = time.monotonic() - killed
        print(f"\n{name}: a new worker {respawned:.2f} s after kill -9")
        assert server.process.poll() is None
        for _ in range(10):
            assert status_or_none(server.port, "/healthz") == 200


def gone(pid):
    """Ended: no such process, or a zombie left for its new parent to reap."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("name", sorted(WITH_WORKERS))
def test_a_killed_supervisor_takes_its_workers_with_it(
    name, deployed_chat_project, redis_server, tmp_path
):
    project = deployed_chat_project(chat_answers(name))
    variables = {"REDIS_URL": redis_server.url, "WEB_CONCURRENCY": "2"}
    with start_production_server(project, tmp_path / "first.log", **variables) as first:
        wait_for(lambda: len(workers(first.process.pid)) == 2, 20, "two workers")
        orphans = workers(first.process.pid)
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        wait_for(lambda: all(gone(pid) for pid in orphans), 15, "the workers to stop")
    # The port is free again: a process manager's restart binds it, and only the new code answers.
    with start_production_server(
        project, tmp_path / "second.log", port=first.port, **variables
    ) as second:
        assert second.process.poll() is None
        assert status_or_none(second.port, "/healthz") == 200
