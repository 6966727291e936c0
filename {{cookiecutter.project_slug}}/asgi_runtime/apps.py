from django.apps import AppConfig


class RuntimeConfig(AppConfig):
    """The runtime is an app: its system checks and its runserver command."""

    name = "asgi_runtime"

    def ready(self):
        from . import checks  # noqa: F401 (registers the system checks)
