"""
`manage.py tasks_worker`: runs the background tasks the site enqueues (the database backend of
TASKS), one at a time, as django-tasks-db's `db_worker` does and with its options (`--help`),
and makes sure that no task stays "running" after its worker died.

Stopping: SIGTERM (or Ctrl-C) lets the task in progress finish, then the worker exits; a second
SIGTERM interrupts the task, which is marked FAILED. A worker killed outright (SIGKILL, out of
memory, its machine gone) can mark nothing, and its task would stay RUNNING for ever. So each
worker holds a lock for as long as it lives, one that is released when its process dies: an
advisory lock on PostgreSQL (its session ends with its connection), a file lock beside the
SQLite database. When a worker starts, and every minute after, it marks FAILED the running
tasks of every worker whose lock is free, with WorkerLost as their error.
"""

import fcntl
import hashlib
import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

from django.db import DatabaseError, OperationalError, connections
from django.utils import timezone
from django_tasks_db.management.commands.db_worker import Command as DatabaseWorkerCommand
from django_tasks_db.models import DBTaskResult

from asgi_runtime.tasks import TaskResultStatus, WorkerLost

logger = logging.getLogger(__name__)

SWEEP_SECONDS = 60


def lock_key(worker_id):
    """A worker's PostgreSQL advisory lock: a signed 64-bit number."""
    digest = hashlib.sha256(f"tasks-worker:{worker_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresLiveness:
    """A worker is alive while its session holds its advisory lock."""

    def __init__(self, alias):
        self.alias = alias
        # A connection of its own, outside the ones Django closes between tasks.
        self.holder = connections.create_connection(alias)

    def hold(self, worker_id):
        with self.holder.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [lock_key(worker_id)])

    def release(self):
        # Unlocked before closing: with Django's pool, closing returns the session to the pool
        # rather than ending it. A session already lost holds no lock.
        try:
            with self.holder.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock_all()")
        except DatabaseError:
            pass
        finally:
            self.holder.close()

    def is_alive(self, worker_id):
        key = lock_key(worker_id)
        with connections[self.alias].cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            if not cursor.fetchone()[0]:
                return True
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        return False


class FileLiveness:
    """A worker is alive while it holds the lock of its file, in a folder beside the SQLite
    database (one machine: SQLite is a file of one machine)."""

    def __init__(self, alias):
        name = str(connections[alias].settings_dict["NAME"])
        if name.startswith("file:") or name == ":memory:":
            self.folder = Path(tempfile.gettempdir(), "tasks-workers")
        else:
            database = Path(name).resolve()
            self.folder = database.parent / f".{database.name}-workers"
        self.held = None

    def path(self, worker_id):
        return self.folder / f"{hashlib.sha256(worker_id.encode()).hexdigest()[:32]}.lock"

    def hold(self, worker_id):
        self.folder.mkdir(parents=True, exist_ok=True)
        # Locked before it appears under its name: a file found there has a live owner, or
        # had one.
        descriptor, temporary = tempfile.mkstemp(dir=self.folder, suffix=".new")
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        os.replace(temporary, self.path(worker_id))
        self.held = (descriptor, self.path(worker_id))

    def release(self):
        if self.held:
            descriptor, path = self.held
            path.unlink(missing_ok=True)
            os.close(descriptor)
            self.held = None

    def is_alive(self, worker_id):
        try:
            descriptor = os.open(self.path(worker_id), os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(descriptor)
        self.path(worker_id).unlink(missing_ok=True)
        return False


def liveness_for(alias):
    if connections[alias].vendor == "postgresql":
        return PostgresLiveness(alias)
    return FileLiveness(alias)


def fail_tasks_of_lost_workers(liveness, backend_name):
    """Mark FAILED the running tasks whose worker is gone; return their ids."""
    failed = []
    running = DBTaskResult.objects.running().filter(backend_name=backend_name)
    for result in running.only("id", "worker_ids"):
        worker_id = result.worker_ids[-1] if result.worker_ids else ""
        if liveness.is_alive(worker_id):
            continue
        marked = DBTaskResult.objects.filter(id=result.id, status=TaskResultStatus.RUNNING).update(
            status=TaskResultStatus.FAILED,
            finished_at=timezone.now(),
            return_value=None,
            exception_class_path=f"{WorkerLost.__module__}.{WorkerLost.__qualname__}",
            traceback=f"WorkerLost: worker {worker_id} stopped while running this task.\n",
        )
        if marked:
            logger.warning("Task %s: its worker %s is gone, marked FAILED", result.id, worker_id)
            failed.append(str(result.id))
    return failed


class Command(DatabaseWorkerCommand):
    help = (
        "Run the background tasks of the database backend; mark FAILED the tasks of workers "
        "that died while running them."
    )

    def handle(self, *args, **options):
        alias = DBTaskResult.objects.db
        backend_name = options["backend_name"]
        liveness = liveness_for(alias)
        liveness.hold(options["worker_id"])
        on_sigterm = signal.getsignal(signal.SIGTERM)
        try:
            self.sweep(liveness, backend_name)
            if not options["batch"]:
                sweeper = threading.Thread(
                    target=self.sweep_every_minute, args=(liveness, backend_name), daemon=True
                )
                sweeper.start()
            super().handle(*args, **options)
        finally:
            # The worker's own stop handler goes with it: a SIGTERM that comes late (a process
            # manager that signals every process, after runserver did) ends the exit quietly
            # instead of raising in the middle of it.
            signal.signal(signal.SIGTERM, on_sigterm)
            # Also when called from code (call_command, tests): the lock's connection closes.
            liveness.release()

    def sweep(self, liveness, backend_name):
        try:
            fail_tasks_of_lost_workers(liveness, backend_name)
        except OperationalError as error:
            # A locked SQLite database, a database restarting: next time.
            logger.warning("Could not look for tasks of lost workers: %s", error)
        finally:
            connections.close_all()

    def sweep_every_minute(self, liveness, backend_name):
        while True:
            time.sleep(SWEEP_SECONDS)
            self.sweep(liveness, backend_name)
