from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The project package is an app too: it owns project-wide code (templates, and what
    else outlives any feature app)."""

    name = "{{ cookiecutter.project_slug }}"
