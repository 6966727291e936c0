from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The project package is an app too: it owns project-wide code (checks, commands,
    templates) that outlives any feature app."""

    name = "{{ cookiecutter.project_slug }}"

    def ready(self):
        from . import checks  # noqa: F401 (registers the system checks)
