"""
Background tasks in production: the Procfile's `worker:` process runs what the site enqueues
and stores the result, on SQLite and on PostgreSQL. Stopped with SIGTERM, it finishes the task
in hand; killed outright (SIGKILL), its task is marked FAILED (WorkerLost) by the next worker
to start, never left "running" and never run twice: the database backend runs a task at most
once, and says so when a run was cut short.

The server plays no part: one project per database, on uvicorn.
"""

import json
import signal

import pytest

from harness import wait_for
from matrix import only_when
from projects import start_worker

pytestmark = [
    pytest.mark.slow,
    only_when(lambda answers: answers["server"] == "uvicorn" and not answers["websockets"]),
]

ENQUEUE = """
import json, probe_tasks
result = probe_tasks.{task}.enqueue(*{args})
print(json.dumps(result.id))
"""
RESULT = """
import json
from asgi_runtime.tasks import default_task_backend
result = default_task_backend.get_result({id})
error = result.errors[-1].exception_class_path if result.errors else None
value = result.return_value if result.status == "SUCCESSFUL" else None
print(json.dumps([result.status, value, error]))
"""


def shell(project, code):
    """Run `code` in the project's Django shell, with the probe's tasks; its last line, as JSON."""
    completed = project.manage("shell", "--no-imports", "-c", code, env=project.probe_env())
    assert completed.returncode == 0, completed.stdout
    return json.loads(completed.stdout.strip().splitlines()[-1])


def enqueue(project, task, *args):
    return shell(project, ENQUEUE.format(task=task, args=list(args)))


def result_of(project, task_id):
    """(status, return value, error class path) of a task."""
    return tuple(shell(project, RESULT.format(id=json.dumps(task_id))))


def runs(marker):
    return marker.read_text().split() if marker.exists() else []


def test_the_worker_process_runs_a_task_and_stores_its_result(deployed_project, tmp_path):
    with start_worker(deployed_project, tmp_path / "worker.log") as worker:
        task_id = enqueue(deployed_project, "add", 2, 3)
        wait_for(lambda: result_of(deployed_project, task_id)[0] != "READY", 30, "the task runs")
        assert result_of(deployed_project, task_id) == ("SUCCESSFUL", 5, None)
        assert worker.stop()[0] == 0
    assert "probe_tasks.add state=SUCCESSFUL" in worker.log


def test_sigterm_lets_the_task_in_hand_finish(deployed_project, tmp_path):
    marker = tmp_path / "runs"
    with start_worker(deployed_project, tmp_path / "worker.log") as worker:
        task_id = enqueue(deployed_project, "slow", str(marker), 3)
        wait_for(lambda: runs(marker) == ["started"], 30, "the task starts")

        code, _ = worker.stop(timeout=30)

    assert code == 0
    assert runs(marker) == ["started", "done"]
    assert result_of(deployed_project, task_id) == ("SUCCESSFUL", "done", None)
    # A routine stop, said once at INFO (django-tasks-db's own WARNING is turned into it).
    stopping = [line for line in worker.log.splitlines() if "Received Terminated" in line]
    assert len(stopping) == 1 and "INFO" in stopping[0], worker.log
    assert "finishing the task in hand, then stopping" in stopping[0]


def test_a_second_sigterm_interrupts_the_task_which_is_marked_failed(deployed_project, tmp_path):
    marker = tmp_path / "runs"
    with start_worker(deployed_project, tmp_path / "worker.log") as worker:
        task_id = enqueue(deployed_project, "slow", str(marker), 60)
        wait_for(lambda: runs(marker) == ["started"], 30, "the task starts")

        worker.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "finishing the task in hand" in worker.log, 10, "the first SIGTERM")
        assert worker.stop(timeout=30) is not None  # stopped, not killed

    assert runs(marker) == ["started"]
    assert result_of(deployed_project, task_id) == ("FAILED", None, "builtins.SystemExit")


def test_a_task_whose_worker_was_killed_is_marked_failed_not_lost(deployed_project, tmp_path):
    marker = tmp_path / "runs"
    with start_worker(deployed_project, tmp_path / "killed.log") as worker:
        task_id = enqueue(deployed_project, "slow", str(marker), 60)
        wait_for(lambda: runs(marker) == ["started"], 30, "the task starts")
        worker.kill()  # SIGKILL: nothing runs after it
    assert result_of(deployed_project, task_id)[0] == "RUNNING"

    with start_worker(deployed_project, tmp_path / "next.log") as worker:
        # The worker that starts next finds the task's worker gone.
        assert result_of(deployed_project, task_id) == (
            "FAILED",
            None,
            "asgi_runtime.tasks.WorkerLost",
        )
        assert worker.stop()[0] == 0
    assert runs(marker) == ["started"]  # not run a second time
    assert "its worker" in worker.log and "marked FAILED" in worker.log
