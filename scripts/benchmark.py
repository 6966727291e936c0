"""
Benchmark: the generated project against a bare `django-admin startproject`, per ASGI server,
as ratios taken in one alternating run on this machine. Prints a Markdown table (with the
date, the machine, the versions and the exact command) to paste into the template's README;
progress goes to stderr.

Run it with the template's environment, from the template's root:

    .venv/bin/python scripts/benchmark.py                       # everything, ~30 min, 2 cores
    .venv/bin/python scripts/benchmark.py --seconds 1 --rounds 2 --messages 5   # ~10 min
    .venv/bin/python scripts/benchmark.py --only json,admin,session --servers uvicorn
    .venv/bin/python scripts/benchmark.py --template /path/to/another/checkout

Parts (--only), per server (--servers uvicorn,daphne,hypercorn,granian):

  json      A trivial *async* view: JsonResponse({"hello": "world"}).
  admin     GET /admin/login/ without a cookie: session, auth and CSRF middleware run, the
            admin's template renders, a CSRF cookie is set. Django's own admin login form
            on both sides: the template runs with DJANGO_ADMIN_FORCE_ALLAUTH=false (on, its
            default, /admin/login/ only redirects to the site's login page).
  session   A *sync* view that reads request.user and request.session, with the session
            cookie of a user logged in once per project (through a test-only login view):
            two SQLite queries per request.
            These three: requests per second with wrk (1 thread, --connections keep-alive
            connections, X-Forwarded-Proto: https); ratio template / bare.
  room      The template's room consumer (/ws/rooms/<room>/) against a minimal Channels
            consumer (benchmark_support/bench_bare_asgi.py: group_add, then group_send of each
            text message as is; no origin check, auth, limits or JSON), both on the in-memory
            layer. One room of --room-members (10) clients; one of them sends, keeping at most
            --room-window (10) messages not yet received by every member. Figure: messages
            per second received by all members (so members x that deliveries per second);
            ratio template / minimal. Also the median time until all members have a message.
  workers   The template baked with the Redis layer, WEB_CONCURRENCY=2 against
            WEB_CONCURRENCY=1, GET /admin/login/ with wrk; ratio 2 workers / 1 worker.
            uvicorn and granian only; daphne has no workers and the template runs hypercorn
            with --workers 0: "n/a".
  broadcast --clients (1,000) WebSocket clients in one room on one server process; one of them
            sends --messages (10) messages per round, each 20 ms after the previous one reached
            every member. Figure: time from the send until the *last* member has the message,
            p50/p99 over all rounds' messages, for the in-memory and the Redis pub/sub layer
            (--layers), the room consumer and the minimal consumer alternating. Ratio: the
            template's p99 / the minimal consumer's, per round; the verdict is on the
            template's own p99. Also memory per idle socket ("memory" is an alias): RSS of the
            server's processes with the clients connected and idle for 1 s, minus RSS with
            none (after a warm-up connection and message), divided by the number of clients.
  slow      Slow clients: while raw TCP connections hold responses open, a separate client
            GETs /healthz and the trivial async JSON view (/bench/json/) alternately, 100 times
            each, one fresh connection per request, spread over at least --seconds, each with
            a 10 s timeout (counted as such; any timeout makes p99 "timeout"). Held open:
            32, then 1,000 connections that each requested bench/big/ (4 MiB) with a 4 KiB
            SO_RCVBUF and read nothing (the probing starts once every one has the start of its
            response, or after 60 s); then 100 server-sent-event streams (bench/sse/, an async
            StreamingHttpResponse, an event a second), every other one read 1 KiB at a time
            about once a second, the others not at all. The bare project answers /healthz
            with a view of bench_urls (the template before Django). Figures: p50 / p99 (ms) of
            each path over all rounds, template and bare, absolute: no ratio; the verdict is
            on the template's p99. Progress (stderr) also gives how long until every slow
            connection had an answer, the server's RSS growth, and how long until /healthz
            answered again once they left (in the table when 1 s or more).

How:
- The template (--template, default this checkout) is copied at the start and every project
  is baked from the copy (project_name=Bench, websockets=yes, database=sqlite, the in-memory
  layer unless said), so that edits made during the run do not mix in. The report gives its
  commit and a digest of its content, and whether the project uses handler.py and
  middleware.py.
- Both projects run under the template's production command, the `web:` line of the baked
  project's Procfile, via /bin/sh -c "exec ...", with the environment of production
  (DJANGO_DEBUG=false, DJANGO_READ_DOT_ENV=false, a secret, DJANGO_ALLOWED_HOSTS=127.0.0.1,
  HOST, PORT, WEB_CONCURRENCY=1 unless said, REDIS_URL), after migrate and collectstatic. The
  bare project runs the very same line with only the application path swapped (its stock
  asgi.py for HTTP, bench_bare_asgi for WebSockets) and the template's hypercorn.toml: same
  server, same flags.
- Test-only views come from scripts/benchmark_support (copied to the work directory and put
  on PYTHONPATH): bench_settings imports the project's settings and sets ROOT_URLCONF to
  bench_urls (the views above, then the project's own URLs). For the bare project it changes
  Django's stock settings only in DEBUG=False, SECRET_KEY and ALLOWED_HOSTS from the
  environment, and CHANNEL_LAYERS (the template's backends) for its consumer.
- The two servers of a comparison run at the same time, idle while the other is measured,
  and the measurements alternate, baseline then template (--rounds pairs), after an
  unmeasured warm-up. Each pair gives a ratio; the table shows their median, min and max,
  and the medians of the absolute figures.
- "other load": the cores that processes outside this benchmark kept busy, on average, while
  a part ran (/proc/stat's busy time, steal included, minus this process's and its
  children's CPU time). On a shared machine it tells which figures were measured in a crowd.
- WebSocket clients: a small asyncio client of this script (uvloop when installed), lean
  enough for 1,000 sockets in one event loop. They send Origin: http://127.0.0.1:<port> and
  no X-Forwarded-Proto (the template compares the Origin's scheme with the request's). The
  "client floor" note is the same client against a trivial fan-out server in its own
  process: what the measurement itself adds.
- The template's per-connection message rate limit (WEBSOCKET_MESSAGE_RATE/_BURST, 10/s and
  a burst of 30 by default) would close the sending client: the WebSocket parts raise both to
  10^6 through those environment variables. The limiter still runs.
- Bounded: every wrk run by --seconds and by a request count (--seconds x 50,000, an error if
  reached); every WebSocket round by --seconds or a message count and by 10 s without
  progress; connections by timeouts; slow clients by a count, 60 s to connect them all (plus
  50 ms each), 60 s for their answers, 60 s of probing (then fewer requests), 60 s for the
  server to answer /healthz again, and bench/sse/'s streams end by themselves after 10 min.
  Only 127.0.0.1. Every process started (servers, a throwaway redis-server on a free port) is
  stopped at the end, on failure, on SIGINT and SIGTERM; every socket is closed. A part that
  fails shows as "error: ..." in the table and the run goes on; the work directory (baked
  projects, server logs) is then kept (or with --keep).
- The open-files limit is raised to the hard limit (servers inherit it); if that is not
  possible or not enough for 2 x --clients (broadcast) or 1,000 slow clients, the output says
  so and uses fewer clients. The 1,000 slow clients of 4 MB need that much memory free (a
  server may buffer every body: daphne does, ~4 GiB), else that measurement is an error.

Limits:
- Load generator and servers share the machine (and whatever else runs on it, see the load
  average in the report): wrk (C) takes little CPU, the WebSocket client (Python) more.
  Absolute figures vary from run to run; ratios taken in alternation are what compares.
  Look at min-max before trusting a difference of a few per cent. 2 workers cannot reach
  2x while the load generator and other work take part of the 2 cores.
- Broadcast latency is measured at the client (until the last of 1,000 sockets has been read
  by one event loop): an upper bound of the server's fan-out time, see the client floor. With
  50 messages per project (5 rounds x 10), p99 is close to the maximum.
- Memory per socket: one measurement per server process (RSS does not depend on CPU
  contention, so it is not alternated), including allocator slack; the sum over every
  process of the server (granian: main process and worker).
- SQLite in both projects, Django's connection defaults (CONN_MAX_AGE=0) in both.
- Targets (issue 15, on every server): trivial JSON view >= 2.5x stock, /admin/login/ and
  the logged-in session view >= 1.3x, no ratio below 1x. 2 workers >= 1.6x 1 worker; room
  consumer >= 1.0x the minimal one; broadcast to 1,000 sockets p99 <= 100 ms in memory,
  <= 200 ms over Redis; with slow clients (32 or 1,000 not reading 4 MB, 100 SSE streams),
  /healthz p99 <= 100 ms and the async view's p99 <= 200 ms. Verdicts use the median ratio
  (the template's p99 for broadcast and slow clients).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import hashlib
import http.client
import importlib.metadata
import json
import math
import os
import re
import resource
import secrets
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
TEMPLATE = SCRIPTS.parent
SUPPORT = SCRIPTS / "benchmark_support"
VENV_BIN = TEMPLATE / ".venv" / "bin"
sys.path.insert(0, str(TEMPLATE / "tests"))

from harness import Server, environment, fetch, free_port, procfile_command  # noqa: E402

SERVERS = ("uvicorn", "daphne", "hypercorn", "granian")
WORKER_SERVERS = ("uvicorn", "granian")
PARTS = ("json", "admin", "session", "room", "workers", "broadcast", "slow")
HTTP_PARTS = ("json", "admin", "session")
LAYERS = ("in-memory", "redis")
SLUG = "bench"  # project_name=Bench
ROOM = "bench"
PASSWORD = secrets.token_urlsafe(18)
SECRET_KEY = "benchmark-" + secrets.token_urlsafe(48)
HTTPS = "X-Forwarded-Proto: https"
WRK_MAX_RATE = 50_000  # requests per second: wrk stops after seconds x this many
NO_LIMITS = {"WEBSOCKET_MESSAGE_RATE": "1000000", "WEBSOCKET_MESSAGE_BURST": "1000000"}

# wrk: stop after a number of requests (the count bound), count answers other than 200, and
# print one line the script parses.
WRK_SCRIPT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) limit = tonumber(args[1]); seen = 0; bad = 0 end
function response(status, headers, body)
  seen = seen + 1
  if status ~= 200 then bad = bad + 1 end
  if seen >= limit then wrk.thread:stop() end
end
function done(summary, latency, requests)
  local b, capped = 0, 0
  for _, t in ipairs(threads) do
    b = b + t:get("bad")
    if t:get("seen") >= t:get("limit") then capped = 1 end
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d bad=%d errors=%d capped=%d p50_us=%d p99_us=%d\\n",
    summary.requests, summary.duration, b, e.connect + e.read + e.write + e.timeout, capped,
    latency:percentile(50), latency:percentile(99)))
end
"""


def say(*words):
    print(time.strftime("%H:%M:%S"), *words, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class Row:
    server: str
    measurement: str
    target: str = ""
    ratios: list = field(default_factory=list)
    absolute: str = ""
    verdict: str = ""
    others: float | None = None  # cores used by processes outside this benchmark meanwhile

    def cells(self):
        if self.ratios:
            median = f"{statistics.median(self.ratios):.2f}x"
            spread = (
                f"{min(self.ratios):.2f}-{max(self.ratios):.2f}" if len(self.ratios) > 1 else "-"
            )
        else:
            median = spread = "-"
        return [
            self.server,
            self.measurement,
            self.target,
            median,
            spread,
            self.absolute,
            "-" if self.others is None else f"{self.others:.1f}",
            self.verdict,
        ]


def verdict_at_least(ratios, threshold):
    return "met" if ratios and statistics.median(ratios) >= threshold else "missed"


def percentile(values, p):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def pairs_ratios(pairs, key):
    return [b[key] / a[key] for a, b in pairs]


def medians(results, key):
    return statistics.median(result[key] for result in results)


# ---------------------------------------------------------------------------------------------
# Processes: servers (tests/harness.py), redis-server, memory


class Context:
    def __init__(self, args, work, stack):
        self.args = args
        self.work = work
        self.stack = stack  # closes everything this run started
        self.support = work / "support"
        self.bare = work / "bare"
        self.lua = work / "wrk.lua"
        self.redis_port = None
        self.logs = 0

    def log_path(self, name):
        self.logs += 1
        return self.work / "logs" / f"{self.logs:03d}-{name}.log"


def base_env(**variables):
    """The production environment of the Procfile line, with the benchmark's settings module."""
    values = {
        "DJANGO_DEBUG": "false",
        "DJANGO_READ_DOT_ENV": "false",
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "HOST": "127.0.0.1",
        "WEB_CONCURRENCY": "1",
        # The room's clients are anonymous.
        "ROOMS_REQUIRE_LOGIN": "false",
        # /admin/login/ is Django's form, as in the bare project, not a redirect to the site's
        # login: the admin and workers parts measure the same work on both sides.
        "DJANGO_ADMIN_FORCE_ALLAUTH": "false",
    }
    return environment(bin_dir=VENV_BIN, **{**values, **variables})


@dataclass
class Project:
    name: str  # "template" or "bare"
    path: Path
    package: str
    command: str  # the Procfile line
    layer: str = "in-memory"

    def env(self, ctx, **variables):
        values = {
            "PYTHONPATH": str(ctx.support),
            "DJANGO_SETTINGS_MODULE": "bench_settings",
            "BENCH_PROJECT": self.package,
        }
        if self.name == "bare":
            values.update(BENCH_BARE="1", BENCH_CHANNEL_LAYER=self.layer)
        if self.layer == "redis":
            values["REDIS_URL"] = redis_url(ctx, self.name)
        return base_env(**{**values, **variables})

    def manage(self, ctx, *args):
        completed = subprocess.run(
            [str(VENV_BIN / "python"), "manage.py", *args],
            cwd=self.path,
            env=self.env(ctx),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
        )
        if completed.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} in {self.path}:\n{completed.stdout}")


def start_server(ctx, stack, project, *, app=None, ready="/healthz", label="", **variables):
    """Start the project's Procfile line (with `app` as the application, for the bare one)."""
    command = project.command
    if app:
        template_app = f"{SLUG}.asgi:application"
        if template_app not in command:
            raise RuntimeError(f"no {template_app} in the Procfile line: {command}")
        command = command.replace(template_app, app)
    env = project.env(ctx, PORT=free_port(), **variables)
    log = ctx.log_path(f"{label or project.name}")
    server = Server(project.path, command, env, log, ready_path=ready, timeout=60)
    stack.callback(stop_server, server)
    say(f"  started {label or project.name} on :{server.port} (log {log.name})")
    return server


def stop_server(server):
    server.stop()
    problems = server.log_problems()
    if problems:
        say(
            f"  {Path(server.log_path).name}: {len(problems)} log line(s) like: {problems[0][:160]}"
        )


def redis_url(ctx, who):
    if ctx.redis_port is None:
        start_redis(ctx)
    return f"redis://127.0.0.1:{ctx.redis_port}/{0 if who == 'template' else 1}"


def start_redis(ctx):
    port = free_port()
    log = open(ctx.log_path("redis-server"), "wb")
    ctx.stack.callback(log.close)
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    ctx.stack.callback(stop_process, process)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.1)
    ctx.redis_port = port
    say(f"  started redis-server on :{port}")


def stop_process(process):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class OtherLoad:
    """CPU used by processes outside this benchmark, from now until cores() is called: the
    machine's busy time (/proc/stat, steal included) minus this process's and its waited-for
    children's (servers count once stopped, so call cores() after they are)."""

    def __init__(self):
        self.began = self.sample()

    @staticmethod
    def sample():
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        own = os.times()
        mine = own.user + own.system + own.children_user + own.children_system
        return time.monotonic(), busy, mine

    def cores(self):
        now = self.sample()
        if self.began is None or now is None or now[0] <= self.began[0]:
            return None
        elapsed = now[0] - self.began[0]
        return max(0.0, (now[1] - self.began[1]) - (now[2] - self.began[2])) / elapsed


def session_rss_kib(server):
    """RSS of every process in the server's session (it runs in a session of its own)."""
    total = 0
    sid = server.process.pid
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[3]) != sid:
                continue
            for line in Path(f"/proc/{entry.name}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


def session_processes(server):
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{entry.name}/stat").read_text()
                count += int(stat.rsplit(")", 1)[1].split()[3]) == server.process.pid
    return count


# ---------------------------------------------------------------------------------------------
# Projects


def make_bare(ctx):
    """`django-admin startproject bare`, migrated, with the benchmark's user."""
    subprocess.run(
        [str(VENV_BIN / "django-admin"), "startproject", "bare"],
        cwd=ctx.work,
        env=base_env(),
        check=True,
        capture_output=True,
    )
    bare = Project("bare", ctx.bare, "bare", "")
    bare.manage(ctx, "migrate", "--noinput")
    create_user(ctx, bare)
    return bare


def create_user(ctx, project):
    project.manage(
        ctx,
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model\n"
        "User = get_user_model()\n"
        "User.objects.filter(username='bench').delete()\n"
        f"User.objects.create_user('bench', password={PASSWORD!r})\n",
    )


def bake(ctx, server, layer):
    """The template baked for `server` and `layer`, migrated, static files collected."""
    out = ctx.work / f"{server}-{layer}"
    completed = subprocess.run(
        [
            str(VENV_BIN / "cookiecutter"),
            "--no-input",
            "-o",
            str(out),
            str(ctx.template),
            "project_name=Bench",
            f"server={server}",
            "websockets=yes",
            f"channel_layer={layer}",
            "database=sqlite",
        ],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if completed.returncode:
        raise RuntimeError(f"cookiecutter failed:\n{completed.stdout}\n{completed.stderr}")
    path = out / SLUG
    project = Project("template", path, SLUG, procfile_command(path), layer)
    project.manage(ctx, "migrate", "--noinput")
    project.manage(ctx, "collectstatic", "--noinput")
    create_user(ctx, project)
    return project


def bare_for(ctx, bare, template, layer="in-memory"):
    """The bare project, served by the template's command line (and its hypercorn.toml)."""
    for name in ("hypercorn.toml",):
        if (template.path / name).exists():
            shutil.copy(template.path / name, bare.path / name)
    return Project("bare", bare.path, "bare", template.command, layer)


def start_http_pair(ctx, stack, server_name, bare, template, label):
    """The bare project and the template, serving HTTP on the same command."""
    baseline = bare_for(ctx, bare, template)
    return {
        "bare": start_server(
            ctx,
            stack,
            baseline,
            app="bare.asgi:application",
            ready="/bench/json/",
            label=f"{server_name}-bare-{label}",
        ),
        "template": start_server(ctx, stack, template, label=f"{server_name}-template-{label}"),
    }


def start_websocket_pair(ctx, stack, server_name, bare, template, layer, label):
    """The bare project's minimal consumer and the template, on the same command and layer."""
    baseline = bare_for(ctx, bare, template, layer)
    return {
        "bare": start_server(
            ctx,
            stack,
            baseline,
            app="bench_bare_asgi:application",
            ready="/bench/json/",
            label=f"{server_name}-bare-{label}",
        ),
        "template": start_server(
            ctx, stack, template, label=f"{server_name}-template-{label}", **NO_LIMITS
        ),
    }


TEMPLATE_FILES = (
    "cookiecutter.json",
    "hooks",
    "local_extensions.py",
    "{{cookiecutter.project_slug}}",
)


def snapshot_template(ctx):
    """Copy the template as it is now, so that every server is baked from the same state
    while others edit it; return a digest of its content."""
    ctx.template = ctx.work / "template"
    ctx.template.mkdir()
    for name in TEMPLATE_FILES:
        source = ctx.args.template / name
        if source.is_dir():
            shutil.copytree(
                source, ctx.template / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        elif source.exists():
            shutil.copy2(source, ctx.template / name)
    digest = hashlib.sha256()
    for path in sorted(path for path in ctx.template.rglob("*") if path.is_file()):
        digest.update(str(path.relative_to(ctx.template)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def template_state(ctx, project_path=None):
    """Which of the pieces another engineer is integrating the generated project uses."""
    source = ctx.template / "{{cookiecutter.project_slug}}" / "asgi_runtime"
    state = {name: (source / name).exists() for name in ("handler.py", "middleware.py")}
    if project_path:
        asgi = (project_path / SLUG / "asgi.py").read_text()
        state["handler used"] = "from asgi_runtime.handler import" in asgi
        handler = project_path / "asgi_runtime" / "handler.py"
        state["middleware used"] = (
            state["handler used"]
            and handler.exists()
            and re.search(r"^\s*from \.middleware import", handler.read_text(), re.M) is not None
        )
    return state


# ---------------------------------------------------------------------------------------------
# HTTP: wrk


def wrk(ctx, port, path, seconds, headers=()):
    seconds = max(1, round(seconds))
    limit = seconds * WRK_MAX_RATE
    args = [
        "wrk",
        "-t1",
        f"-c{ctx.args.connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(ctx.lua),
    ]
    for header in (HTTPS, *headers):
        args += ["-H", header]
    args += [f"http://127.0.0.1:{port}{path}", "--", str(limit)]
    completed = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    found = re.search(
        r"BENCH requests=(\d+) duration_us=(\d+) bad=(\d+) errors=(\d+) capped=(\d+) "
        r"p50_us=(\d+) p99_us=(\d+)",
        completed.stdout,
    )
    if not found:
        raise RuntimeError(f"wrk: {completed.stdout}\n{completed.stderr}")
    requests, duration, bad, errors, capped, p50, p99 = map(int, found.groups())
    if capped:
        raise RuntimeError(f"wrk reached its bound of {limit} requests: raise WRK_MAX_RATE")
    if bad or errors > requests / 100 or not requests:
        raise RuntimeError(
            f"{path}: {bad} answers not 200, {errors} socket errors, {requests} requests"
        )
    return {"rps": requests / (duration / 1e6), "p50": p50 / 1000, "p99": p99 / 1000}


def log_in(port):
    body = urllib.parse.urlencode({"username": "bench", "password": PASSWORD})
    status, headers, content = fetch(
        port,
        "POST",
        "/bench/login/",
        headers={"X-Forwarded-Proto": "https", "Content-Type": "application/x-www-form-urlencoded"},
        body=body,
    )
    if status != 200:
        raise RuntimeError(f"login: {status} {content[:200]!r}")
    for cookie in headers.get_all("Set-Cookie") or ():
        if cookie.startswith("sessionid="):
            return cookie.split(";", 1)[0]
    raise RuntimeError("login: no session cookie")


HTTP_TARGETS = {  # part: (path, label, threshold, target text), the same on every server
    "json": ("/bench/json/", "trivial JSON view (async)", 2.5, ">= 2.5x"),
    "admin": ("/admin/login/", "GET /admin/login/", 1.3, ">= 1.3x"),
    "session": ("/bench/session/", "logged-in sync view (session + user)", 1.3, ">= 1.3x"),
}


def check_answer(port, part, path, headers):
    status, _, body = fetch(port, "GET", path, headers=headers)
    if status != 200:
        raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
    if part == "session" and json.loads(body).get("user") != "bench":
        raise RuntimeError(f"GET {path}: not logged in: {body[:200]!r}")
    if part == "admin" and b"csrfmiddlewaretoken" not in body:
        raise RuntimeError(f"GET {path}: no login form")


def http_parts(ctx, server_name, template, bare, parts):
    rows = {}
    for part in parts:
        _, label, threshold, target_text = HTTP_TARGETS[part]
        rows[part] = Row(server_name, label, target_text)
    try:
        with contextlib.ExitStack() as stack:
            servers = start_http_pair(ctx, stack, server_name, bare, template, "http")
            cookies = {name: log_in(server.port) for name, server in servers.items()}
            for part in parts:
                try:
                    http_part(ctx, servers, cookies, part, rows[part])
                except Exception as error:  # noqa: BLE001 - reported in the table, next part
                    rows[part].verdict = failed(error)
    except Exception as error:  # noqa: BLE001 - the servers did not start
        verdict = failed(error)
        for row in rows.values():
            row.verdict = row.verdict or verdict
    return list(rows.values())


def http_part(ctx, servers, cookies, part, row):
    args = ctx.args
    path, _, threshold, _ = HTTP_TARGETS[part]
    headers = {name: [] for name in servers}
    if part == "session":
        headers = {name: [f"Cookie: {cookies[name]}"] for name in servers}
    for name, server in servers.items():
        check_answer(
            server.port, part, path, dict(h.split(": ", 1) for h in (HTTPS, *headers[name]))
        )
        wrk(ctx, server.port, path, 1, headers[name])  # warm-up
    pairs = []
    for round_ in range(args.rounds):
        a = wrk(ctx, servers["bare"].port, path, args.seconds, headers["bare"])
        b = wrk(ctx, servers["template"].port, path, args.seconds, headers["template"])
        pairs.append((a, b))
        say(
            f"  {part} {round_ + 1}/{args.rounds}: bare {a['rps']:.0f}, template "
            f"{b['rps']:.0f} req/s ({b['rps'] / a['rps']:.2f}x)"
        )
    row.ratios = pairs_ratios(pairs, "rps")
    bare_runs, template_runs = [a for a, _ in pairs], [b for _, b in pairs]
    row.absolute = (
        f"{medians(template_runs, 'rps'):,.0f} vs {medians(bare_runs, 'rps'):,.0f} "
        f"req/s; p99 {medians(template_runs, 'p99'):.0f} vs "
        f"{medians(bare_runs, 'p99'):.0f} ms"
    )
    row.verdict = verdict_at_least(row.ratios, threshold)


def workers_part(ctx, server_name, template):
    args = ctx.args
    row = Row(server_name, "2 workers / 1 worker (GET /admin/login/, Redis layer)", ">= 1.6x")
    if server_name not in WORKER_SERVERS:
        row.target = "n/a"
        row.absolute = (
            "no workers" if server_name == "daphne" else "the template runs it with --workers 0"
        )
        row.verdict = "n/a"
        return [row]
    try:
        with contextlib.ExitStack() as stack:
            one = start_server(
                ctx, stack, template, label=f"{server_name}-1-worker", WEB_CONCURRENCY="1"
            )
            two = start_server(
                ctx, stack, template, label=f"{server_name}-2-workers", WEB_CONCURRENCY="2"
            )
            say(
                f"  processes: 1 worker: {session_processes(one)}, 2 workers: "
                f"{session_processes(two)}"
            )
            path = "/admin/login/"
            for server in (one, two):
                check_answer(server.port, "admin", path, {"X-Forwarded-Proto": "https"})
                wrk(ctx, server.port, path, 2)  # warm-up, every worker
            pairs = []
            for round_ in range(args.rounds):
                a = wrk(ctx, one.port, path, args.seconds)
                b = wrk(ctx, two.port, path, args.seconds)
                pairs.append((a, b))
                say(
                    f"  workers {round_ + 1}/{args.rounds}: 1: {a['rps']:.0f}, 2: "
                    f"{b['rps']:.0f} req/s ({b['rps'] / a['rps']:.2f}x)"
                )
            row.ratios = pairs_ratios(pairs, "rps")
            row.absolute = (
                f"{medians([b for _, b in pairs], 'rps'):,.0f} vs "
                f"{medians([a for a, _ in pairs], 'rps'):,.0f} req/s"
            )
            row.verdict = verdict_at_least(row.ratios, 1.6)
    except Exception as error:  # noqa: BLE001
        row.verdict = failed(error)
    return [row]


# ---------------------------------------------------------------------------------------------
# WebSockets: a small client, lean enough for 1,000 sockets on one event loop


class WSClient(asyncio.Protocol):
    """One WebSocket connection: counts the text messages it receives, keeps the last one."""

    def __init__(self, port, path):
        loop = asyncio.get_running_loop()
        self.opened = loop.create_future()
        # Retrieved even when nobody awaits it (a connect cancelled after another failed).
        self.opened.add_done_callback(lambda future: future.cancelled() or future.exception())
        self.lost = loop.create_future()
        self.buffer = bytearray()
        self.handshaken = False
        self.closing = False
        self.close_code = None
        self.transport = None
        self.count = 0
        self.last = None
        self.on_message = None
        self.fragments = None
        key = base64.b64encode(os.urandom(16)).decode()
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: http://127.0.0.1:{port}\r\n\r\n"
        ).encode()

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc):
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data):
        self.buffer += data
        if not self.handshaken:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536:
                    self.transport.abort()
                return
            head = bytes(self.buffer[:end])
            del self.buffer[: end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(
                    ConnectionError(f"handshake refused: {head.splitlines()[0]!r}")
                )
                self.transport.abort()
                return
            self.handshaken = True
            self.opened.set_result(None)
        self.read_frames()

    def read_frames(self):
        buffer = self.buffer
        size = len(buffer)
        position = 0
        while size - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length = second & 0x7F
            header = 2
            if length == 126:
                if size - position < 4:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
                header = 4
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                header = 10
            if second & 0x80:
                raise ConnectionError("masked frame from the server")
            if size - position < header + length:
                break
            payload = bytes(buffer[position + header : position + header + length])
            position += header + length
            opcode = first & 0x0F
            if opcode in (0, 1, 2):
                if not first & 0x80:  # fragment
                    self.fragments = (self.fragments or b"") + payload
                    continue
                if opcode == 0:
                    payload, self.fragments = (self.fragments or b"") + payload, None
                self.count += 1
                self.last = payload
                if self.on_message is not None:
                    self.on_message(self)
            elif opcode == 9:  # ping
                self.send_frame(0xA, payload)
            elif opcode == 8:  # close
                if len(payload) >= 2:
                    self.close_code = int.from_bytes(payload[:2], "big")
                if not self.closing:
                    self.closing = True
                    self.send_frame(0x8, payload[:2])
                self.transport.close()
        del buffer[:position]

    def send_frame(self, opcode, payload):
        if self.transport.is_closing():
            return
        length = len(payload)
        if length < 126:
            header = bytes((0x80 | opcode, 0x80 | length))
        elif length < 65536:
            header = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
        else:
            header = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
        mask = os.urandom(4)
        masked = (
            int.from_bytes(payload, "big")
            ^ int.from_bytes((mask * (length // 4 + 1))[:length], "big")
        ).to_bytes(length, "big")
        self.transport.write(header + mask + masked)

    def send_text(self, text):
        self.send_frame(0x1, text.encode())

    def close(self):
        if self.transport is None or self.transport.is_closing():
            return
        if self.handshaken and not self.closing:
            self.closing = True
            self.send_frame(0x8, (1000).to_bytes(2, "big"))
        else:
            self.transport.close()


async def connect_clients(port, path, count, concurrency=50, timeout=20.0):
    """`count` open WebSockets to path, at most `concurrency` handshakes at a time."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    clients = []

    async def one():
        async with gate:
            _, client = await asyncio.wait_for(
                loop.create_connection(lambda: WSClient(port, path), "127.0.0.1", port), timeout
            )
            clients.append(client)
            await asyncio.wait_for(asyncio.shield(client.opened), timeout)

    tasks = [asyncio.ensure_future(one()) for _ in range(count)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout + count / 10)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await close_clients(clients)
        raise
    return clients


async def close_clients(clients, timeout=10.0):
    for client in clients:
        client.close()
    pending = [client.lost for client in clients if not client.lost.done()]
    if pending:
        await asyncio.wait(pending, timeout=timeout)
    for client in clients:
        if client.transport is not None and not client.lost.done():
            client.transport.abort()


class Fanout:
    """One room: clients[0] sends, every client (sender included) must receive each message.

    Each member receives the room's messages in order, so when the k-th message reached the
    last member, every earlier one had reached every member.
    """

    def __init__(self, clients, expect_user):
        self.clients = clients
        self.members = len(clients)
        self.expect_user = expect_user  # the template's consumer adds "user"
        self.arrivals = []
        self.full_at = []
        self.unexpected = 0
        self.waiter = None
        for client in clients:
            client.on_message = self.received

    def received(self, client):
        index = client.count - 1
        if index >= len(self.arrivals):
            self.unexpected += 1
            return
        self.arrivals[index] += 1
        if self.arrivals[index] == self.members:
            self.full_at.append(time.perf_counter())
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)

    async def progress(self, stall, sent):
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self.waiter, stall)
        except TimeoutError:
            closed = sum(client.lost.done() for client in self.clients)
            codes = {client.close_code for client in self.clients if client.lost.done()}
            raise RuntimeError(
                f"{len(self.full_at)} of {sent} messages reached all {self.members} members "
                f"within {stall} s; {closed} connections closed (codes {codes})"
            ) from None

    async def run(self, tag, *, seconds, max_messages, window, pause=0.0, stall=10.0):
        """Send up to max_messages (window of them not yet everywhere) for up to `seconds`,
        then wait until all reached every member: rate and per-message latencies."""
        for client in self.clients:
            client.count = 0
        self.arrivals, self.full_at, self.unexpected = [], [], 0
        sent_at = []
        sender = self.clients[0]
        start = time.perf_counter()
        deadline = start + seconds
        sent = 0
        while sent < max_messages and time.perf_counter() < deadline:
            while sent < max_messages and sent - len(self.full_at) < window:
                self.arrivals.append(0)
                sent_at.append(time.perf_counter())
                sender.send_text(json.dumps({"message": f"{tag}-{sent}"}))
                sent += 1
            await self.progress(stall, sent)
            if pause:
                await asyncio.sleep(pause)
        while len(self.full_at) < sent:
            await self.progress(stall, sent)
        last = json.loads(sender.last)
        if last.get("message") != f"{tag}-{sent - 1}" or ("user" in last) != self.expect_user:
            raise RuntimeError(f"unexpected answer: {sender.last[:200]!r}")
        if self.unexpected:
            raise RuntimeError(f"{self.unexpected} unexpected messages")
        latencies = [done - began for began, done in zip(sent_at, self.full_at, strict=True)]
        return {"rate": sent / (self.full_at[-1] - start), "latencies": latencies, "sent": sent}


class FloorServer(asyncio.Protocol):
    """A trivial WebSocket server that writes each message to every connection at once: the
    floor of what the client can measure (in this process, sharing its event loop)."""

    def __init__(self, connections):
        self.connections = connections
        self.buffer = bytearray()
        self.transport = None
        self.open = False

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        with contextlib.suppress(ValueError):
            self.connections.remove(self.transport)

    def data_received(self, data):
        self.buffer += data
        if not self.open:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            del self.buffer[: end + 4]
            self.open = True
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: -\r\n\r\n"
            )
            self.connections.append(self.transport)
        while len(self.buffer) >= 6:
            length, header = self.buffer[1] & 0x7F, 2
            if length == 126:
                length, header = int.from_bytes(self.buffer[2:4], "big"), 4
            if len(self.buffer) < header + 4 + length or length > 125:
                return
            mask = self.buffer[header : header + 4]
            payload = bytes(
                byte ^ mask[i % 4]
                for i, byte in enumerate(self.buffer[header + 4 : header + 4 + length])
            )
            opcode = self.buffer[0] & 0x0F
            del self.buffer[: header + 4 + length]
            if opcode == 1:
                frame = bytes((0x81, length)) + payload
                for transport in self.connections:
                    transport.write(frame)
            elif opcode == 8:
                self.transport.close()


async def client_floor(count, messages):
    """p50 and p99 (s) of a broadcast to `count` clients through FloorServer."""
    loop = asyncio.get_running_loop()
    connections = []
    port = free_port()
    server = await loop.create_server(lambda: FloorServer(connections), "127.0.0.1", port)
    clients = []
    try:
        clients = await connect_clients(port, "/", count)
        fanout = Fanout(clients, expect_user=False)
        await fanout.run("warm", seconds=30, max_messages=3, window=1, pause=0.02)
        result = await fanout.run(
            "floor", seconds=messages * 2.0, max_messages=messages, window=1, pause=0.02
        )
        return percentile(result["latencies"], 50), percentile(result["latencies"], 99)
    finally:
        await close_clients(clients)
        server.close()
        await server.wait_closed()


def run_async(coroutine):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


WS_PATHS = {"bare": f"/ws/echo/{ROOM}/", "template": f"/ws/rooms/{ROOM}/"}


def room_part(ctx, server_name, template, bare):
    args = ctx.args
    members, window = args.room_members, args.room_window
    row = Row(
        server_name, f"room consumer / minimal consumer (msg/s, {members} members)", ">= 1.0x"
    )
    try:
        with contextlib.ExitStack() as stack:
            servers = start_websocket_pair(
                ctx, stack, server_name, bare, template, "in-memory", "ws"
            )

            async def measure():
                clients = {}
                try:
                    for name, server in servers.items():
                        clients[name] = await connect_clients(server.port, WS_PATHS[name], members)
                    fans = {name: Fanout(clients[name], name == "template") for name in servers}
                    limit = max(100, int(args.seconds * 20_000))
                    for name in servers:  # warm-up
                        await fans[name].run("warm", seconds=1, max_messages=limit, window=window)
                    pairs = []
                    for round_ in range(args.rounds):
                        a = await fans["bare"].run(
                            f"r{round_}", seconds=args.seconds, max_messages=limit, window=window
                        )
                        b = await fans["template"].run(
                            f"r{round_}", seconds=args.seconds, max_messages=limit, window=window
                        )
                        pairs.append((a, b))
                        say(
                            f"  room {round_ + 1}/{args.rounds}: minimal {a['rate']:.0f}, "
                            f"template {b['rate']:.0f} msg/s ({b['rate'] / a['rate']:.2f}x)"
                        )
                    return pairs
                finally:
                    for group in clients.values():
                        await close_clients(group)

            pairs = run_async(measure())
        row.ratios = pairs_ratios(pairs, "rate")
        p50 = {
            side: statistics.median(statistics.median(pair[i]["latencies"]) for pair in pairs)
            for i, side in enumerate(("bare", "template"))
        }
        row.absolute = (
            f"{medians([b for _, b in pairs], 'rate'):,.0f} vs "
            f"{medians([a for a, _ in pairs], 'rate'):,.0f} msg/s to all {members}, "
            f"{window} in flight; p50 to all {1000 * p50['template']:.1f} vs "
            f"{1000 * p50['bare']:.1f} ms"
        )
        row.verdict = verdict_at_least(row.ratios, 1.0)
    except Exception as error:  # noqa: BLE001
        row.verdict = failed(error)
    return [row]


def broadcast_part(ctx, server_name, template, bare, layer):
    args = ctx.args
    clients_wanted = args.clients
    limit_ms = 100 if layer == "in-memory" else 200
    latency_row = Row(
        server_name,
        f"broadcast to {clients_wanted} sockets, {layer} layer (p99 ratio)",
        f"p99 <= {limit_ms} ms",
    )
    memory_row = Row(server_name, f"memory per idle socket, {layer} layer", "(report)")
    try:
        with contextlib.ExitStack() as stack:
            servers = start_websocket_pair(ctx, stack, server_name, bare, template, layer, layer)

            async def measure():
                clients = {}
                rss = {}
                try:
                    for name, server in servers.items():  # warm-up, then RSS with no socket
                        few = await connect_clients(server.port, WS_PATHS[name], 5)
                        await Fanout(few, name == "template").run(
                            "warm", seconds=5, max_messages=5, window=1
                        )
                        await close_clients(few)
                    await asyncio.sleep(1.0)
                    rss0 = {name: session_rss_kib(server) for name, server in servers.items()}
                    for name, server in servers.items():
                        began = time.perf_counter()
                        clients[name] = await connect_clients(
                            server.port, WS_PATHS[name], clients_wanted
                        )
                        say(
                            f"  {clients_wanted} {name} clients connected in "
                            f"{time.perf_counter() - began:.1f} s"
                        )
                    await asyncio.sleep(1.0)
                    rss1 = {name: session_rss_kib(server) for name, server in servers.items()}
                    rss = {name: (rss1[name] - rss0[name]) / clients_wanted for name in servers}
                    fans = {name: Fanout(clients[name], name == "template") for name in servers}
                    for name in servers:  # warm-up, unmeasured
                        await fans[name].run(
                            "warm", seconds=30, max_messages=3, window=1, pause=0.02
                        )
                    rounds = []
                    for round_ in range(args.rounds):
                        pair = []
                        for name in ("bare", "template"):
                            result = await fans[name].run(
                                f"r{round_}",
                                seconds=args.messages * 2.0,
                                max_messages=args.messages,
                                window=1,
                                pause=0.02,
                            )
                            pair.append(result["latencies"])
                        rounds.append(pair)
                        say(
                            f"  broadcast {layer} {round_ + 1}/{args.rounds}: p99 minimal "
                            f"{1000 * percentile(pair[0], 99):.1f} ms, template "
                            f"{1000 * percentile(pair[1], 99):.1f} ms"
                        )
                    return rounds, rss, rss0
                finally:
                    for group in clients.values():
                        await close_clients(group)

            rounds, rss, rss0 = run_async(measure())
        every = {
            side: [x for pair in rounds for x in pair[i]]
            for i, side in enumerate(("bare", "template"))
        }
        latency_row.ratios = [percentile(b, 99) / percentile(a, 99) for a, b in rounds]
        ms = {
            side: (1000 * percentile(values, 50), 1000 * percentile(values, 99))
            for side, values in every.items()
        }
        latency_row.absolute = (
            f"template p50 {ms['template'][0]:.1f} / p99 {ms['template'][1]:.1f} ms; minimal "
            f"p50 {ms['bare'][0]:.1f} / p99 {ms['bare'][1]:.1f} ms; "
            f"n={len(every['template'])} messages"
        )
        latency_row.verdict = "met" if ms["template"][1] <= limit_ms else "missed"
        memory_row.ratios = [rss["template"] / rss["bare"]] if rss["bare"] > 0 else []
        memory_row.absolute = (
            f"{rss['template']:.1f} vs {rss['bare']:.1f} KiB per socket (RSS at 0 sockets: "
            f"{rss0['template'] / 1024:.0f} vs {rss0['bare'] / 1024:.0f} MiB)"
        )
        memory_row.verdict = "-"
    except Exception as error:  # noqa: BLE001
        latency_row.verdict = memory_row.verdict = failed(error)
    return [latency_row, memory_row]


# ---------------------------------------------------------------------------------------------
# Slow clients: raw sockets that hold responses open, while another client probes

SLOW_BODY = 4 * 1024 * 1024  # bench/big/ (benchmark_support/bench_urls.py)
SLOW_CLIENTS = (32, 1000)
SLOW_STREAMS = 100
SLOW_RCVBUF = 4096  # the kernel doubles it
SLOW_PROBES = 100  # requests per probed path and measurement, the two paths alternating
SLOW_TIMEOUT = 10.0  # seconds per probe request, and per connect of a slow connection
SLOW_BUDGET = 60.0  # seconds of probing per measurement at most (then fewer requests)
SLOW_PATHS = {"/healthz": ("/healthz", 100), "/bench/json/": ("async JSON view", 200)}


def slow_scenarios(args):
    """(label, the slow connections' path, how many, whether half of them read slowly)."""
    return [
        *((f"{n:,} clients not reading 4 MB", "/bench/big/", n, False) for n in args.slow_clients),
        (
            f"{SLOW_STREAMS} SSE streams read slowly or not at all",
            "/bench/sse/",
            SLOW_STREAMS,
            True,
        ),
    ]


class SlowConnections:
    """`count` TCP connections to 127.0.0.1:port with a small receive buffer, each of which
    sent GET path and reads nothing; read_slowly() takes at most 1 KiB from every other one.
    A context manager: every socket is closed on the way out, whatever happened."""

    def __init__(self, port, path, count):
        self.port = port
        self.count = count
        self.sockets = []
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{HTTPS}\r\n\r\n"
        ).encode()

    def __enter__(self):
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info):
        self.close()

    def open(self):
        deadline = time.monotonic() + 60 + self.count * 0.05
        for _ in range(self.count):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(self.sockets)} of {self.count} slow clients connected")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sockets.append(sock)
            # Before connect(), so that the window the client offers stays small.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
            sock.settimeout(SLOW_TIMEOUT)
            sock.connect(("127.0.0.1", self.port))
            sock.sendall(self.request)
            sock.setblocking(False)

    def wait_answered(self, seconds):
        """Wait up to `seconds` until every connection has the start of its response (or was
        closed), without reading it: (answered 200, answered otherwise or closed, silent)."""
        poller = select.poll()
        waiting = {}
        for sock in self.sockets:
            poller.register(sock, select.POLLIN)
            waiting[sock.fileno()] = sock
        deadline = time.monotonic() + seconds
        ok = bad = 0
        while waiting and time.monotonic() < deadline:
            for fd, _ in poller.poll(max(1, int(1000 * (deadline - time.monotonic())))):
                sock = waiting.pop(fd, None)
                if sock is None:
                    continue
                poller.unregister(fd)
                try:
                    head = sock.recv(12, socket.MSG_PEEK)  # left in the socket's buffer
                except OSError:
                    head = b""
                if head[9:12] == b"200":
                    ok += 1
                else:
                    bad += 1
        return ok, bad, len(waiting)

    def read_slowly(self):
        for sock in self.sockets[::2]:
            with contextlib.suppress(OSError):  # BlockingIOError: nothing new
                sock.recv(1024)

    def close(self):
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self.sockets = []


def probe(port, path):
    """GET path over a fresh connection: seconds, or "timeout" or "error"."""
    began = time.perf_counter()
    try:
        status, _, body = fetch(
            port, "GET", path, headers={"X-Forwarded-Proto": "https"}, timeout=SLOW_TIMEOUT
        )
    except TimeoutError:
        return "timeout"
    except (OSError, http.client.HTTPException):
        return "error"
    elapsed = time.perf_counter() - began
    if elapsed > SLOW_TIMEOUT:
        return "timeout"
    return elapsed if status == 200 and body.startswith(b"{") else "error"


def memory_available_kib():
    with contextlib.suppress(OSError, ValueError, AttributeError):
        text = Path("/proc/meminfo").read_text()
        return int(re.search(r"^MemAvailable:\s+(\d+) kB", text, re.M).group(1))
    return None


def wait_recovered(server, seconds=60.0):
    """Once the slow clients are gone: until the server answers /healthz again."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if isinstance(probe(server.port, "/healthz"), float):
            return
        time.sleep(0.5)
    raise RuntimeError(f"no answer to /healthz within {seconds:.0f} s after the slow clients left")


def slow_measurement(server, path, count, read_slowly, seconds):
    """Hold `count` slow connections to `server` (each GET path), and meanwhile GET /healthz and
    the JSON view alternately, SLOW_PROBES times each, spread over at least `seconds`."""
    if path == "/bench/big/":
        available = memory_available_kib()
        needed = count * SLOW_BODY // 1024 + (1 << 20)  # a server might buffer every body
        if available is not None and available < needed:
            raise RuntimeError(
                f"{available // 1024} MiB of memory available, {needed // 1024} MiB wanted "
                f"for {count} slow clients of 4 MB"
            )
    results = {name: [] for name in SLOW_PATHS}
    rss_before = session_rss_kib(server)
    opened = time.monotonic()
    with SlowConnections(server.port, path, count) as slow:
        answered = slow.wait_answered(60)
        answered_s = time.monotonic() - opened
        time.sleep(0.5)  # the server writes what the connections let it
        rss_held = session_rss_kib(server)
        order = [name for _ in range(SLOW_PROBES) for name in SLOW_PATHS]
        began = time.monotonic()
        last_read = began
        for index, name in enumerate(order):
            now = time.monotonic()
            if now - began > SLOW_BUDGET:
                break
            start_at = began + index * seconds / len(order)
            if start_at > now:
                time.sleep(start_at - now)
            results[name].append(probe(server.port, name))
            if read_slowly and time.monotonic() - last_read >= 1.0:
                slow.read_slowly()
                last_read = time.monotonic()
    left = time.monotonic()
    wait_recovered(server)
    return {
        "probes": results,
        "answered": answered,
        "answered_s": answered_s,
        "recovered_s": time.monotonic() - left,
        "rss": (rss_held - rss_before) / 1024,
    }


def slow_figures(values):
    """(p50, p99, timeouts, errors) of probe results, p50 and p99 as text in ms: timeouts and
    errors rank last, and any timeout makes p99 "timeout"."""
    timeouts, errors = values.count("timeout"), values.count("error")
    if not values:
        return "-", "-", 0, 0
    ranked = [value if isinstance(value, float) else math.inf for value in values]

    def text(value):
        if value < math.inf:
            return f"{1000 * value:.1f}"
        return "timeout" if timeouts else "error"

    p99 = "timeout" if timeouts else text(percentile(ranked, 99))
    return text(percentile(ranked, 50)), p99, timeouts, errors


def slow_part(ctx, server_name, template, bare):
    args = ctx.args
    scenarios = slow_scenarios(args)
    rows = {
        (label, name): Row(server_name, f"{label}: {probe_label} p99", f"p99 <= {limit} ms")
        for label, *_ in scenarios
        for name, (probe_label, limit) in SLOW_PATHS.items()
    }
    try:
        with contextlib.ExitStack() as stack:
            servers = start_http_pair(ctx, stack, server_name, bare, template, "slow")
            for server in servers.values():  # the views answer; a warm-up
                slow_check(server)
                with SlowConnections(server.port, "/bench/big/", 8) as slow:
                    slow.wait_answered(30)
                wait_recovered(server)
            for label, path, count, read_slowly in scenarios:
                try:
                    slow_scenario(ctx, servers, label, path, count, read_slowly, rows)
                except Exception as error:  # noqa: BLE001 - reported in the table, next one
                    for name in SLOW_PATHS:
                        rows[label, name].verdict = failed(error)
    except Exception as error:  # noqa: BLE001 - the servers did not start
        verdict = failed(error)
        for row in rows.values():
            row.verdict = row.verdict or verdict
    return list(rows.values())


def slow_check(server):
    """The probed paths, bench/big/ and bench/sse/ answer as expected."""
    for name in SLOW_PATHS:
        if not isinstance(probe(server.port, name), float):
            raise RuntimeError(f"GET {name}: no JSON answer with 200")
    status, _, body = fetch(
        server.port, "GET", "/bench/big/", headers={"X-Forwarded-Proto": "https"}, timeout=30
    )
    if status != 200 or len(body) != SLOW_BODY:
        raise RuntimeError(f"GET /bench/big/: {status}, {len(body)} bytes")
    with socket.create_connection(("127.0.0.1", server.port), timeout=SLOW_TIMEOUT) as sock:
        sock.sendall(
            f"GET /bench/sse/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{HTTPS}\r\n\r\n".encode()
        )
        received = b""
        deadline = time.monotonic() + SLOW_TIMEOUT
        while b"data: 0" not in received and time.monotonic() < deadline and len(received) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    if not received.startswith(b"HTTP/1.1 200") or b"data: 0" not in received:
        raise RuntimeError(f"GET /bench/sse/: {received[:200]!r}")


def slow_scenario(ctx, servers, label, path, count, read_slowly, rows):
    args = ctx.args
    every = {side: {name: [] for name in SLOW_PATHS} for side in servers}
    short = {side: [] for side in servers}  # rounds' "answered" shortfalls
    recovered = {side: [] for side in servers}  # seconds until /healthz answered again
    for round_ in range(args.rounds):
        said = []
        for side in ("bare", "template"):
            result = slow_measurement(servers[side], path, count, read_slowly, args.seconds)
            for name, values in result["probes"].items():
                every[side][name] += values
            ok, bad, silent = result["answered"]
            if ok < count:
                short[side].append(f"{ok} of {count} answered 200 ({bad} otherwise, {silent} not)")
            figures = ", ".join(
                f"{name} p99 {slow_figures(values)[1]}" for name, values in result["probes"].items()
            )
            recovered[side].append(result["recovered_s"])
            said.append(
                f"{side} {figures} ms ({ok}/{count} answered within "
                f"{result['answered_s']:.1f} s, server RSS {result['rss']:+.0f} MiB, /healthz "
                f"again {result['recovered_s']:.1f} s after they left)"
            )
        say(f"  slow: {label} {round_ + 1}/{args.rounds}: " + "; ".join(said))
    for name, (_, limit) in SLOW_PATHS.items():
        row = rows[label, name]
        parts = []
        for side in ("template", "bare"):
            p50, p99, timeouts, errors = slow_figures(every[side][name])
            text = f"{side} p50 {p50} / p99 {p99} ms"
            trouble = []
            if timeouts:
                trouble.append(f"{timeouts} timeouts")
            if errors:
                trouble.append(f"{errors} errors")
            if short[side]:
                trouble.append("slow clients: " + short[side][0])
            parts.append(text + (f" ({', '.join(trouble)})" if trouble else ""))
        made = {side: len(every[side][name]) for side in servers}
        parts.append(
            f"n={made['template']} requests"
            if made["template"] == made["bare"]
            else f"n={made['template']} vs {made['bare']} requests"
        )
        if name == "/healthz" and max(max(recovered["template"]), max(recovered["bare"])) >= 1:
            parts.append(
                f"once they left, /healthz answered again within {max(recovered['template']):.1f}"
                f" vs {max(recovered['bare']):.1f} s"
            )
        row.absolute = "; ".join(parts)
        p50, p99, timeouts, errors = slow_figures(every["template"][name])
        met = not timeouts and not errors and p99 not in ("-", "error") and float(p99) <= limit
        row.verdict = "met" if met else "missed"


def failed(error):
    say("  FAILED: " + "".join(traceback.format_exception(error)).strip())
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [repr(error)]
    # A server that did not start: its log's last line says why.
    text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return f"error: {text[:200]}"


# ---------------------------------------------------------------------------------------------
# One server


def bench_server(ctx, server_name, bare):
    parts = ctx.args.only
    layers = ctx.args.layers if "broadcast" in parts else []
    projects = {}  # layer: the baked template, or the error that stopped its bake
    wanted = set()
    if {*HTTP_PARTS, "room", "slow"} & set(parts) or "in-memory" in layers:
        wanted.add("in-memory")
    if ("workers" in parts and server_name in WORKER_SERVERS) or "redis" in layers:
        wanted.add("redis")
    for layer in LAYERS:
        if layer not in wanted:
            continue
        say(f"{server_name}: baking ({layer} layer)")
        try:
            if layer == "redis":
                redis_url(ctx, "template")  # the Redis project's checks want it running
            projects[layer] = bake(ctx, server_name, layer)
            ctx.state = template_state(ctx, projects[layer].path)
        except Exception as error:  # noqa: BLE001
            projects[layer] = failed(error)

    def project(layer, *labels):
        """The baked project, or None and error rows naming why there is none."""
        if isinstance(projects.get(layer), Project):
            return projects[layer]
        rows.extend(Row(server_name, label, verdict=projects[layer]) for label in labels)
        return None

    rows = []

    def measured(function, *args):
        """Run a part; note on its rows how busy other processes kept the machine meanwhile."""
        watch = OtherLoad()
        new_rows = function(ctx, server_name, *args)
        others = watch.cores()
        for row in new_rows:
            if row.ratios or row.absolute:  # measured (slow clients: absolute figures only)
                row.others = others
        rows.extend(new_rows)
        if others is not None:
            say(f"  other processes used {others:.1f} cores meanwhile")

    http = [part for part in HTTP_PARTS if part in parts]
    if http and project("in-memory", *(HTTP_TARGETS[part][1] for part in http)):
        say(f"{server_name}: {', '.join(http)}")
        measured(http_parts, projects["in-memory"], bare, http)
    if "room" in parts and project("in-memory", "room consumer"):
        say(f"{server_name}: room")
        measured(room_part, projects["in-memory"], bare)
    if "workers" in parts:
        if server_name not in WORKER_SERVERS:
            rows.extend(workers_part(ctx, server_name, None))
        elif project("redis", "2 workers / 1 worker"):
            say(f"{server_name}: workers")
            measured(workers_part, projects["redis"])
    for layer in layers:
        if project(layer, f"broadcast, {layer} layer"):
            say(f"{server_name}: broadcast, {layer} layer")
            measured(broadcast_part, projects[layer], bare, layer)
    if "slow" in parts and project("in-memory", "slow clients"):
        say(f"{server_name}: slow clients")
        measured(slow_part, projects["in-memory"], bare)
    return rows


# ---------------------------------------------------------------------------------------------
# Report


def raise_open_files(wanted):
    """Soft open-files limit up to the hard limit: (text for the report, limit, problem)."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(before, 1 << 20)
    soft, problem = before, ""
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as error:
            problem = f"could not raise the open-files limit from {soft} to {target}: {error}"
    if soft < wanted:
        problem = (problem + "; " if problem else "") + (
            f"the open-files limit, {soft} (hard limit {hard}), is below the {wanted} wanted"
        )
    text = f"open files {soft}" + (f" (raised from {before})" if soft != before else "")
    return text, soft, problem


def versions():
    names = [
        "Django",
        "channels",
        "channels-redis",
        "asgiref",
        "uvicorn",
        "uvloop",
        "httptools",
        "wsproto",
        "daphne",
        "Twisted",
        "hypercorn",
        "granian",
        "websockets",
        "redis",
        "servestatic",
    ]
    found = []
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{name} {importlib.metadata.version(name)}")
    for command in (["redis-server", "--version"], ["wrk", "--version"]):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(command, capture_output=True, text=True, timeout=10)
            text = (out.stdout or out.stderr).split("\n")[0]
            if command[0] == "redis-server":
                text = "redis-server " + re.search(r"v=(\S+)", text).group(1)
            else:
                text = " ".join(text.split()[:2])
            found.append(text)
    return ", ".join(found)


def cpu_model():
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def git_state(directory):
    """The commit checked out, and how many files differ from it (read-only git commands)."""

    def git(*words):
        completed = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(directory), *words],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if completed.returncode:
            raise subprocess.SubprocessError(completed.stderr)
        return completed.stdout.strip()

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = git("rev-parse", "--short", "HEAD")
        paths = [f":(literal){name}" for name in TEMPLATE_FILES]
        changed = len(git("status", "--porcelain", "--", *paths).splitlines())
        return f"commit {head}" + (
            f" plus uncommitted changes to {changed} template file(s)" if changed else ""
        )
    return "not a git checkout"


def report(ctx, rows, started, notes, load_before):
    args = ctx.args
    command = [os.path.relpath(sys.executable, Path.cwd()), *sys.argv]
    state = getattr(ctx, "state", None) or template_state(ctx)
    state_text = ", ".join(f"{name}: {'yes' if value else 'no'}" for name, value in state.items())
    load_after = os.getloadavg()
    lines = [
        "### Benchmark: generated project vs bare `django-admin startproject`",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC, {(time.time() - started.timestamp()) / 60:.1f} min",
        f"- Machine: nproc {len(os.sched_getaffinity(0))}, {cpu_model()}, {ctx.open_files}; "
        "load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (other work shares the "
        "machine)",
        f"- Python {sys.version.split()[0]}; {versions()}",
        f"- Template: {args.template}, copied at the start ({ctx.git_state}; content sha256 "
        f"{ctx.digest}) and baked from the copy; {state_text}",
        f"- Command: `{shlex.join(command)}` (seconds {args.seconds}, rounds {args.rounds}, "
        f"servers {','.join(args.servers)}, parts {','.join(args.only)}, "
        f"{args.connections} HTTP connections, {args.clients} broadcast clients, "
        f"{args.messages} broadcast messages per round, "
        f"{'/'.join(map(str, args.slow_clients))} slow clients)",
        "- Ratio: template / baseline per alternating pair (baseline = bare startproject on the "
        "same server with the same flags; for workers, 1 worker); median and min-max over "
        "rounds. Rates (req/s, msg/s): higher is better. Broadcast p99 and memory: costs, "
        "lower is better; their verdict is on the template's absolute figure. Other load: cores "
        "used by processes outside the benchmark while the part ran. Slow clients: latencies "
        "of single requests while slow connections are held open, p50 / p99 over all rounds, "
        "absolute (no ratio), lower is better; the verdict is on the template's p99.",
    ]
    lines += [f"- Note: {note}" for note in notes]
    lines += [
        "",
        "| server | measurement | target | ratio (median) | min-max | absolute (template vs "
        "baseline, medians) | other load (cores) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [cell.replace("|", "\\|") for cell in row.cells()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comma_list(allowed):
    def parse(text):
        values = [value.strip() for value in text.split(",") if value.strip()]
        wrong = [value for value in values if value not in allowed]
        if wrong or not values:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}")
        return values

    return parse


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--seconds",
        type=int,
        default=2,
        help="seconds per measurement (HTTP and room; slow: probing at least), default 2",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternations (baseline, template pairs), default 5"
    )
    parser.add_argument(
        "--servers",
        type=comma_list(SERVERS),
        default=list(SERVERS),
        help=f"default {','.join(SERVERS)}",
    )
    parser.add_argument(
        "--only",
        type=comma_list((*PARTS, "memory")),
        default=list(PARTS),
        help=f"parts, default {','.join(PARTS)} (memory = broadcast)",
    )
    parser.add_argument(
        "--layers",
        type=comma_list(LAYERS),
        default=list(LAYERS),
        help="channel layers of the broadcast part, default in-memory,redis",
    )
    parser.add_argument(
        "--connections", type=int, default=32, help="wrk keep-alive connections, default 32"
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=1000,
        help="WebSocket clients in the broadcast room, default 1000",
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=10,
        help="broadcast messages per round and project, default 10",
    )
    parser.add_argument(
        "--room-members",
        type=int,
        default=10,
        help="members of the room in the room part, default 10",
    )
    parser.add_argument(
        "--room-window", type=int, default=10, help="room part: messages in flight, default 10"
    )
    parser.add_argument(
        "--template",
        type=Path,
        default=TEMPLATE,
        help=f"the template to bake (a checkout of this repository), default {TEMPLATE}",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (baked projects, server logs)"
    )
    args = parser.parse_args()
    args.template = args.template.resolve()
    args.only = [part if part != "memory" else "broadcast" for part in args.only]
    args.only = [part for part in PARTS if part in args.only]
    args.slow_clients = list(SLOW_CLIENTS)
    if args.seconds < 1 or args.rounds < 1 or args.clients < 1 or args.messages < 1:
        parser.error("--seconds, --rounds, --clients and --messages must be 1 or more")
    return args


def terminate(signum, frame):
    raise SystemExit(128 + signum)


def main():
    args = parse_args()
    if shutil.which("wrk") is None and set(args.only) & {*HTTP_PARTS, "workers"}:
        sys.exit("wrk is not installed (apt-get install wrk, brew install wrk)")
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    notes = []
    if {"admin", "workers"} & set(args.only):
        notes.append(
            "DJANGO_ADMIN_FORCE_ALLAUTH=false in the template: GET /admin/login/ renders Django's "
            "admin login form on both sides (by default the template redirects it to the site's "
            "login page)"
        )
    # Broadcast: both projects' clients at once; slow clients: one project's at a time (the
    # servers' sockets are theirs, and they inherit the limit); and some to spare.
    slow_most = max(SLOW_CLIENTS) if "slow" in args.only else 0
    open_files, limit, problem = raise_open_files(max(2 * args.clients, slow_most) + 1000)
    if problem:
        notes.append(problem)
        fitting = max(1, (limit - 1000) // 2)
        if "broadcast" in args.only and fitting < args.clients:
            notes.append(f"broadcast with {fitting} clients instead of {args.clients}")
            args.clients = fitting
        if slow_most > max(1, limit - 1000):
            fitting = max(1, limit - 1000)
            args.slow_clients = sorted({min(count, fitting) for count in SLOW_CLIENTS})
            notes.append(f"slow clients: {fitting} instead of {slow_most}")
    work = Path(tempfile.mkdtemp(prefix="benchmark-"))
    (work / "logs").mkdir()
    say(f"work directory {work}")
    rows = []
    ok = False
    try:
        with contextlib.ExitStack() as stack:
            ctx = Context(args, work, stack)
            ctx.open_files = open_files
            ctx.git_state = git_state(args.template)
            ctx.digest = snapshot_template(ctx)
            shutil.copytree(SUPPORT, ctx.support, ignore=shutil.ignore_patterns("__pycache__"))
            ctx.lua.write_text(WRK_SCRIPT)
            if "broadcast" in args.only:
                p50, p99 = run_async(client_floor(args.clients, 50))
                notes.append(
                    f"client floor: this script's WebSocket client, {args.clients} sockets, "
                    "against a trivial fan-out server in its own event loop: broadcast "
                    f"p50 {1000 * p50:.1f} / p99 {1000 * p99:.1f} ms (50 messages)"
                )
                say(notes[-1])
            needs_bare = set(args.only) - {"workers"}
            bare = make_bare(ctx) if needs_bare else None
            try:
                for server_name in args.servers:
                    try:
                        rows += bench_server(ctx, server_name, bare)
                    except Exception as error:  # noqa: BLE001 - the next server still runs
                        rows.append(Row(server_name, "(setup)", verdict=failed(error)))
            except (KeyboardInterrupt, SystemExit):
                notes.append("INTERRUPTED: the table is incomplete")
                print(report(ctx, rows, started, notes, load_before))
                raise
            print(report(ctx, rows, started, notes, load_before))
            ok = all(not row.verdict.startswith("error") for row in rows)
    finally:
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"work directory kept: {work}")


if __name__ == "__main__":
    main()
