"""
Backing services for the projects under test: throwaway PostgreSQL and Redis servers of
their own, started from the installed binaries on free ports, stopped at the end. A missing
binary skips the tests that need it, with an install hint; in CI (CI=true) it fails them.
"""

import contextlib
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
import redis

from harness import free_port


def in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason):
    """Skip where a tool is missing; in CI, where nothing may be skipped, fail."""
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def pytest_sessionfinish(session, exitstatus):
    """In CI a skipped test is a failure: whatever it needs, CI must install."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if in_ci() and reporter and reporter.stats.get("skipped") and exitstatus == 0:
        session.exitstatus = 1


def find_binary(name, install_hint):
    path = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None
    )
    if not path:
        unavailable(f"{name} not found: install {install_hint}")
    return path


class RedisServer:
    """A redis-server of its own on a free port, keeping nothing on disk."""

    def __init__(self, directory):
        binary = find_binary("redis-server", "Redis (Debian: apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._command = [
            binary,
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(directory)),
        ]
        self.process = None
        self.start()

    def start(self):
        self.process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError("redis-server did not start")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A Redis shared by every test of the run."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path):
    """A Redis for one test alone, which the test may stop and start again."""
    server = RedisServer(tmp_path)
    yield server
    server.stop()


class PostgresServer:
    """A throwaway PostgreSQL cluster (initdb, pg_ctl) on a free port, trust auth."""

    def __init__(self):
        hint = "PostgreSQL (Debian: apt-get install postgresql)"
        self.initdb, self.pg_ctl = find_binary("initdb", hint), find_binary("pg_ctl", hint)
        # Not under pytest's private temporary directory: the postgres user must reach it.
        self.directory = Path(tempfile.mkdtemp(prefix="template-tests-postgres-"))
        # PostgreSQL refuses to run as root: run it as the postgres user then.
        self.as_user = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.directory, "postgres")
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}"
        self._run(
            self.initdb, "-D", self.directory / "db", "-A", "trust", "-U", "postgres", "-E", "UTF8"
        )

    def _run(self, *args):
        subprocess.run([*self.as_user, *args], check=True, stdout=subprocess.DEVNULL)

    def start(self):
        options = (
            f"-p {self.port} -h 127.0.0.1 -k {self.directory} -c fsync=off -c full_page_writes=off"
        )
        self._run(
            self.pg_ctl,
            "-D",
            self.directory / "db",
            "-o",
            options,
            "-l",
            self.directory / "log",
            "-w",
            "start",
        )

    def restart(self):
        """Stop (closing every connection) and start again."""
        self._run(self.pg_ctl, "-D", self.directory / "db", "-m", "fast", "-w", "stop")
        self.start()

    def remove(self):
        subprocess.run(
            [*self.as_user, self.pg_ctl, "-D", self.directory / "db", "-m", "immediate", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    """The URL of a PostgreSQL server shared by the run (each test makes its own databases)."""
    server = PostgresServer()
    try:
        server.start()
        yield server.url
    finally:
        server.remove()


@pytest.fixture
def own_postgres():
    """A PostgreSQL server for one test alone, which the test may restart."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@contextlib.contextmanager
def database(server_url):
    """A database of its own on the test PostgreSQL server, dropped afterwards: its URL."""
    name = f"demo_{secrets.token_hex(4)}"
    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{server_url}/{name}"
    finally:
        with psycopg.connect(f"{server_url}/postgres", autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
