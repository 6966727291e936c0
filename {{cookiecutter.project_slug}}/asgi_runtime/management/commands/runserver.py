"""
`manage.py runserver` runs this project's ASGI server, with the options Django developers know
(`runserver 8001`, `runserver 0.0.0.0:8000`, `--noreload`), and restarts it when a source file
or a template changes.

The server is started with the production command, the `web:` line of Procfile, the one place
it is written: only its address and port come from the command line, and it runs one process.
What development adds is around it: Django's own reloader, which watches the project's Python
modules and template folders (never the database, logs or other data files), and debug
settings from .env (ServeStatic then serves static files from the apps, as they change).

The background tasks' worker, Procfile's `worker:` line, runs beside the server (`--noworker`:
not), so that what a page enqueues, the sign-up's email among it, runs without a second
command. It is stopped with the server, restarted with it on a reload, and gets SIGTERM too if
runserver dies: no worker outlives runserver.
{%- if cookiecutter.websockets %}

A reload stops the server as a deploy does, with SIGTERM: every open WebSocket is closed with
"service restart" (SERVICE_RESTART in limits.py), so that clients reconnect, and the reload
never waits for them.
{%- else %}

A reload stops the server as a deploy does, with SIGTERM.
{%- endif %}
"""

import atexit
import contextlib
import ctypes
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.core.management.commands.runserver import Command as DjangoRunserverCommand
from django.db import connections
from django.utils import autoreload

from asgi_runtime.checks import procfile_command, server_name

# How long a stopping server may take before it is killed: it closes its WebSockets at once.
STOP_SECONDS = 10


def next_to_python(command):
    """A Procfile command with its program found next to this Python (the project's .venv)."""
    if command:
        program = shutil.which(command[0], path=Path(sys.executable).parent)
        command[0] = program or command[0]
    return command


def server_command(host, port):
    """Procfile's `web:` line for one process on host:port."""
    os.environ.update(HOST=host, PORT=str(port), WEB_CONCURRENCY="1")
    return next_to_python(procfile_command())


def worker_command():
    """Procfile's `worker:` line, without a reloader of its own: runserver's restarts it."""
    command = next_to_python(procfile_command(process="worker"))
    return [*command, "--no-reload"] if command else []


def port_taken(host, port):
    """Whether another process listens on host:port, as Django's runserver finds out: the
    server would only fail to start, and the reloader wait for a change that cannot fix it."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        return False  # The server says what is wrong with the address.
    with socket.socket(family, kind) as probe:
        # As the servers bind: a port left in TIME_WAIT by the previous run is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


try:
    LIBC = ctypes.CDLL(None, use_errno=True)  # Loaded here: never between fork and exec.
except OSError:
    LIBC = None  # type: ignore[assignment]  # stop_with_parent() then does nothing.


def stop_with_parent():
    """Runs in the server's and the worker's processes before they start, and in the process
    the reloader runs the server from: each gets SIGTERM when its parent dies (Linux)."""
    with contextlib.suppress(AttributeError):
        LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def exit_on_sigterm(signum, frame):
    """SIGTERM (or the parent's death) stops this process as Ctrl-C does: exit handlers stop
    the server and the worker, and wait for them."""
    raise SystemExit(128 + signum)


def watch_project_sources(sender, **kwargs):
    """Every Python file of the project's own apps: the server imports modules (routing,
    consumers, asgi.py) that this process never does, and Django watches imported ones only."""
    for app in apps.get_app_configs():
        path = Path(app.path)
        if path.is_relative_to(settings.BASE_DIR) and "site-packages" not in path.parts:
            sender.watch_dir(path, "**/*.py")


class Command(DjangoRunserverCommand):
    help = (
        "Runs the ASGI server of Procfile and its background tasks' worker, restarting both "
        "when code or templates change."
    )

    server = None
    worker = None
    stopping = False
    # Set by Django's runserver from the command line (not in its stubs).
    addr: str
    port: str
    _raw_ipv6: bool
    lock = threading.Lock()

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--noworker",
            action="store_false",
            dest="use_worker",
            help="Do not run the background tasks' worker (Procfile's worker: line) too.",
        )

    def run(self, **options):
        autoreload.autoreload_started.connect(watch_project_sources)
        reloader_child = os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) == "true"
        if reloader_child:
            # It runs the server and the worker: it stops them if the process that started it
            # (the one a terminal or a process manager signals) dies.
            stop_with_parent()
        if reloader_child or not options["use_reloader"]:
            signal.signal(signal.SIGTERM, exit_on_sigterm)
        super().run(**options)

    def inner_run(self, *args, **options):
        autoreload.raise_last_exception()
        # The server runs the system checks itself, as in production: an error stops it with
        # one line. Unapplied migrations are only worth a word.
        self.check_migrations()
        connections.close_all()
        command = server_command(self.addr, self.port)
        if not command:
            self.stderr.write("Procfile has no web: line: there is no server to run.")
            os._exit(1)
        if port_taken(self.addr, self.port):
            self.stderr.write("Error: That port is already in use.")
            os._exit(1)
        address = f"[{self.addr}]" if self._raw_ipv6 else self.addr
        worker = worker_command() if options["use_worker"] else []
        self.stdout.write(
            f"Starting {server_name(command)} at http://{address}:{self.port}/ (Procfile's "
            "command, one process)\n"
            + ("and the background tasks' worker (Procfile's worker: line)\n" if worker else "")
            + ("Reloading when code or templates change. " if options["use_reloader"] else "")
            + f"Quit the server with {'CTRL-BREAK' if sys.platform == 'win32' else 'CONTROL-C'}."
        )
        self.stdout.flush()
        atexit.register(self.stop_processes)
        with self.lock:
            if self.stopping:  # SIGTERM came first
                return
            self.server = subprocess.Popen(
                command, cwd=settings.BASE_DIR, preexec_fn=stop_with_parent
            )
            if worker:
                # In a process group of its own, out of reach of the terminal's Ctrl-C: it gets
                # one SIGTERM, from here, and finishes the task in hand (a second signal would
                # interrupt it).
                self.worker = subprocess.Popen(
                    worker, cwd=settings.BASE_DIR, preexec_fn=stop_with_parent, process_group=0
                )
        if options["use_reloader"]:
            autoreload.file_changed.connect(self.reload, weak=False)
        code = self.server.wait()
        if not options["use_reloader"]:
            sys.exit(code)
        if code not in (0, -signal.SIGTERM, -signal.SIGKILL) and not self.stopping:
            self.stderr.write(f"The server stopped (exit status {code}): fix it, then save a file.")

    def stop_processes(self):
        """SIGTERM to the server and the worker, as a deploy sends it: the worker finishes the
        task in hand. SIGKILL for either still there after a while."""
        with self.lock:
            self.stopping = True
            running = [p for p in (self.server, self.worker) if p and p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def reload(self, sender, file_path, **kwargs):
        # A template is no Python module: Django's reloader would only clear its template
        # cache, but the templates are cached in the server's process. Restart for both. The
        # worker imports the code too: restarted with the server.
        self.stop_processes()
        autoreload.trigger_reload(file_path)
