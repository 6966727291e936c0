"""
Settings of a project under benchmark (scripts/benchmark.py): the project's own settings,
with ROOT_URLCONF replaced by bench_urls (the benchmark's views, then the project's URLs).

The benchmark puts this directory on PYTHONPATH and sets DJANGO_SETTINGS_MODULE=bench_settings
and BENCH_PROJECT=<the project's package>. For the bare `django-admin startproject` baseline
(BENCH_BARE=1) it also turns DEBUG off, takes the secret key and hosts from the environment,
and adds the channel layer its minimal consumer needs (BENCH_CHANNEL_LAYER=in-memory|redis,
the same backends as the template's): nothing else changes in Django's stock settings.
"""

import os
from importlib import import_module

_project = import_module(f"{os.environ['BENCH_PROJECT']}.settings")
globals().update({name: value for name, value in vars(_project).items() if name.isupper()})

PROJECT_URLCONF = _project.ROOT_URLCONF
ROOT_URLCONF = "bench_urls"

if os.environ.get("BENCH_BARE") == "1":
    DEBUG = False
    SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
    ALLOWED_HOSTS = os.environ["DJANGO_ALLOWED_HOSTS"].split(",")
    if os.environ.get("BENCH_CHANNEL_LAYER") == "redis":
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": [{"address": os.environ["REDIS_URL"]}]},
            }
        }
    else:
        CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
