"""Running baked projects for real: their commands, servers, and clients that talk to them."""

import contextlib
import gzip
import http.client
import http.server
import json
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

from websockets.sync.client import connect as ws_connect

# The virtual environment running these tests has every package any combination needs.
BIN = Path(sys.executable).parent
PYTHON = BIN / "python"

# What the TLS-terminating proxy in front of production adds. The tests connect from
# 127.0.0.1, which the production commands trust by default (FORWARDED_ALLOW_IPS).
HTTPS = {"X-Forwarded-Proto": "https"}

# What a clean server log never contains, from start to stop.
LOG_PROBLEMS = re.compile(r"traceback|warning|error|exception|critical", re.IGNORECASE)
# granian 2.8 reaps each worker from two threads at a stop (a watcher's join() and the stop's
# join(timeout)): the one that loses sees no exit status and, on a loaded machine, takes the
# worker that already exited for one still running, logs this and kills it. A worker that really
# refused would be killed only after the Procfile's --workers-kill-timeout (25 s).
GRANIAN_REAPING_RACE = re.compile(r"Killing worker-\d+ after it refused to gracefully stop")
GRANIAN_KILL_TIMEOUT = 25


def wait_for(condition, seconds, what, interval=0.1):
    """Poll `condition` until it holds; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(interval)


def free_port():
    """A free port below the kernel's ephemeral range, so that no client socket can take it
    (or connect to itself on it) while a server is starting."""
    try:
        lowest_ephemeral = int(
            Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
        )
    except OSError:
        lowest_ephemeral = 32768
    for _ in range(100):
        port = random.randrange(10000, lowest_ephemeral)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port found")


def procfile_command(project, name="Procfile", process="web"):
    """The `web:` (or `worker:`) line: the one place each command is written, for users and
    tests alike."""
    for line in (project / name).read_text().splitlines():
        if line.startswith(f"{process}:"):
            return line.removeprefix(f"{process}:").strip()
    raise AssertionError(f"{name} has no {process}: line")


# Only these pass from the caller's environment to the projects under test: never a
# DATABASE_URL, REDIS_URL, WEB_CONCURRENCY or the like meant for something else.
PASSED_THROUGH = ("PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "LANG", "TERM", "SSL_CERT_FILE")


def environment(bin_dir=BIN, **variables):
    """A clean environment with a venv first on PATH, plus `variables`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name in PASSED_THROUGH or name.startswith(("LC_", "PIP_"))
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env.update({key: str(value) for key, value in variables.items()})
    return env


def run(project, args, env, timeout=300):
    """Run a command in the project; return it completed, with stdout and stderr merged."""
    return subprocess.run(
        [str(arg) for arg in args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


class Server:
    """A command line from a Procfile, started in its own session on 127.0.0.1."""

    stopped_in = None  # seconds from SIGTERM to exit, once stop() saw it exit

    def __init__(self, project, command, env, log_path, ready_path="/healthz", timeout=40):
        self.project = project
        self.port = int(env.get("PORT", 0))
        self.log_path = log_path
        self.started = time.monotonic()
        with open(log_path, "wb") as log:
            # exec: the server itself gets the signals, as under a process manager.
            self.process = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {command}"],
                cwd=project,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_ready(ready_path, timeout)

    def _wait_until_ready(self, path, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.kill()  # whatever it left in its session
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log}")
            if callable(path):  # a process that serves nothing: ready when it says so
                if path(self.log):
                    return
                time.sleep(0.1)
                continue
            try:
                if fetch(self.port, "GET", path, timeout=2)[0] == 200:
                    return
            # Nothing listening yet; or, rarely, the client's ephemeral port is the server's
            # and the socket connects to itself, reading back its own request.
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"server not ready on :{self.port} after {timeout} s:\n{self.log}")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def log(self):
        return Path(self.log_path).read_text(errors="replace")

    def log_problems(self):
        raced = self.stopped_in is not None and self.stopped_in < GRANIAN_KILL_TIMEOUT
        return [
            line
            for line in self.log.splitlines()
            if LOG_PROBLEMS.search(line) and not (raced and GRANIAN_REAPING_RACE.search(line))
        ]

    def memory_mib(self):
        """Resident memory of the server and every process in its session, in MiB."""
        total_kib = 0
        for pid in self.session():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue  # gone meanwhile
            rss = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
            total_kib += int(rss.group(1)) if rss else 0
        return total_kib / 1024

    def session(self):
        """{pid: command line} of every live process of the server's session (its own, and
        whatever it started, in any process group), zombies aside."""
        processes = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            pid = int(stat.parent.name)
            try:
                if os.getsid(pid) != self.process.pid:
                    continue
                state = stat.read_text().rsplit(")", 1)[1].split()[0]
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except (OSError, ProcessLookupError):
                continue  # gone meanwhile
            if state != "Z":
                processes[pid] = command.decode(errors="replace").strip()
        return processes

    def stop(self, timeout=10):
        """SIGTERM, as a process manager sends it; return (return code, seconds) or None."""
        if self.process.poll() is not None:
            self.kill()  # whatever it left in its session: workers whose supervisor died
            return self.process.returncode, 0.0
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        self.kill()  # anything left in its session (reloader children, workers)
        self.stopped_in = time.monotonic() - began
        return code, self.stopped_in

    def kill(self):
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # Processes of its session in groups of their own (runserver's worker).
        for pid in self.session():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass


def tcp_connection(server_port, client_port):
    """The fields of the server's TCP connection on loopback from `client_port`, as
    /proc/net/tcp lists them (the inode is the tenth), or None once it is gone."""
    wanted = f"0100007F:{server_port:04X} 0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if " ".join(fields[1:3]) == wanted:
            return fields
    return None


def fetch(port, method, path, headers=None, body=None, timeout=10, source="127.0.0.1"):
    """One HTTP request to 127.0.0.1:port from `source`: (status, headers, body bytes)."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0)
    )
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def get_json(port, path, **kwargs):
    status, _, body = fetch(port, "GET", path, **kwargs)
    return status, json.loads(body)


def websocket(server, path="/ws/rooms/lobby/", origin="same-site", headers=None):
    """A WebSocket client of `server`, sending the Origin a page of the site would send."""
    origin = f"http://127.0.0.1:{server.port}" if origin == "same-site" else origin
    return ws_connect(
        f"ws://127.0.0.1:{server.port}{path}",
        origin=origin,
        additional_headers=headers,
        open_timeout=10,
        close_timeout=3,
        max_size=None,
    )


def receive_json(client, timeout=10):
    return json.loads(client.recv(timeout=timeout))


def status_or_none(port, path):
    """The status of GET path, or None while nothing listens (a server restarting)."""
    try:
        return fetch(port, "GET", path)[0]
    except (OSError, http.client.HTTPException):
        return None


def post_body(port, size, declared=True, chunk=64 * 1024):
    """POST `size` bytes, with a Content-Length or chunked; the status line answered (None
    if the server closed without one) and the bytes sent before the answer or the cut."""
    head = b"POST /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Proto: https\r\n"
    head += (
        b"Content-Length: %d\r\n\r\n" % size if declared else b"Transfer-Encoding: chunked\r\n\r\n"
    )
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(head)
        with contextlib.suppress(OSError):
            while sent < size:
                data = b"x" * min(chunk, size - sent)
                client.sendall(data if declared else b"%x\r\n%s\r\n" % (len(data), data))
                sent += len(data)
                if select.select([client], [], [], 0)[0]:
                    break  # answered already
            if not declared:
                client.sendall(b"0\r\n\r\n")
        with contextlib.suppress(OSError):
            return (client.recv(200).split(b"\r\n")[0].decode() or None), sent
    return None, sent


class SentryStandIn:
    """A stand-in for Sentry's ingestion endpoint on loopback: accepts the envelopes a
    project's SDK sends to `dsn` and keeps each one, decoded. No network, no account.

    https://develop.sentry.dev/sdk/data-model/envelopes/
    """

    def __init__(self):
        self.envelopes = []  # raw bytes of each, decompressed
        self.items = []  # (item header, payload), as received
        self.lock = threading.Lock()
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stand_in.receive(body, self.headers.get("Content-Encoding", ""))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.dsn = f"http://public-key@127.0.0.1:{self.server.server_port}/1"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info):
        self.server.shutdown()
        self.server.server_close()

    def receive(self, body, encoding):
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding == "br":
            import brotli  # Sent only by an SDK that has it: then installed.

            body = brotli.decompress(body)
        items, rest = [], body.split(b"\n", 1)[1]  # After the envelope's own header.
        while rest.strip():
            header_line, rest = rest.split(b"\n", 1)
            header = json.loads(header_line)
            if "length" in header:
                payload, rest = rest[: header["length"]], rest[header["length"] + 1 :]
            else:
                payload, _, rest = rest.partition(b"\n")
            items.append((header, payload))
        with self.lock:
            self.envelopes.append(body)
            self.items.extend(items)

    @property
    def events(self):
        """The error events received, in order."""
        with self.lock:
            return [
                json.loads(payload) for header, payload in self.items if header["type"] == "event"
            ]

    def wait_for_event(self, condition, seconds=20):
        """The first event `condition(event)` accepts, once it has arrived."""
        wait_for(
            lambda: any(map(condition, self.events)), seconds, "the event at Sentry's stand-in"
        )
        return next(filter(condition, self.events))
