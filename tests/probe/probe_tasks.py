"""Tasks for the worker tests (test_tasks.py), importable by a worker started with the probe's
settings."""

import time
from pathlib import Path

from asgi_runtime.tasks import task


@task()
def add(a, b):
    return a + b


@task()
def slow(marker, seconds):
    """A line in `marker` each time it starts, then `seconds` of work, then "done" in it."""
    with open(marker, "a") as file:
        file.write("started\n")
    time.sleep(seconds)
    with open(marker, "a") as file:
        file.write("done\n")
    return "done"


def runs(marker):
    """What the runs of `slow` wrote so far."""
    path = Path(marker)
    return path.read_text().split() if path.exists() else []
