"""
Background tasks, on Django's own framework: `django.tasks` from Django 6.0, its backport
`django_tasks` (the same API under another name) on Django 5.2. Import them from here, never
from either, and the project runs on both:

    from asgi_runtime.tasks import task

https://docs.djangoproject.com/en/stable/topics/tasks/
"""

try:
    from django.tasks import (
        TaskContext,
        TaskResult,
        TaskResultStatus,
        default_task_backend,
        task,
        task_backends,
    )
    from django.tasks.backends.dummy import DummyBackend
    from django.tasks.backends.immediate import ImmediateBackend
except ImportError:  # Django 5.2
    # (The ignores: type checking reads both branches; the names are Django 6's for it.)
    from django_tasks import (  # type: ignore[no-redef]
        TaskContext,
        TaskResult,
        TaskResultStatus,
        default_task_backend,
        task,
        task_backends,
    )
    from django_tasks.backends.dummy import DummyBackend  # type: ignore[no-redef]
    from django_tasks.backends.immediate import ImmediateBackend  # type: ignore[no-redef]

__all__ = [
    "DummyBackend",
    "ImmediateBackend",
    "TaskContext",
    "TaskResult",
    "TaskResultStatus",
    "WorkerLost",
    "default_task_backend",
    "task",
    "task_backends",
]


class WorkerLost(Exception):
    """What a task failed with when its worker died while running it (tasks_worker)."""
