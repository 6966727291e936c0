"""
Settings for a project under test: the project's own, plus test-only views (probe_urls.py).

A server under test gets this directory on PYTHONPATH, DJANGO_SETTINGS_MODULE=probe_settings
and PROBED_PROJECT=<the project's package>.
"""

import os
from importlib import import_module

_project = import_module(f"{os.environ['PROBED_PROJECT']}.settings")
globals().update({name: value for name, value in vars(_project).items() if name.isupper()})

PROJECT_URLCONF = _project.ROOT_URLCONF
ROOT_URLCONF = "probe_urls"
SECURE_REDIRECT_EXEMPT = [r"^probe/"]
