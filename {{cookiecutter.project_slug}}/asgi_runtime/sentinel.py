"""
Redis Sentinel for Django's Redis cache (the channel layer has it built in, see settings.py).

Django's RedisCache builds its connection pool with `pool_class.from_url(LOCATION, **OPTIONS)`;
this pool class keeps that call but asks the Sentinels in settings.REDIS_SENTINELS which
server is the primary of settings.REDIS_SENTINEL_MASTER, and asks again after a failover.
"""

from django.conf import settings
from redis.connection import parse_url
from redis.sentinel import Sentinel, SentinelConnectionPool


def redis_connection_options(url):
    """The database number and credentials of a redis:// URL, without its host and port."""
    return {
        name: value
        for name, value in parse_url(url).items()
        if name in ("db", "username", "password") and value is not None
    }


class SentinelPool(SentinelConnectionPool):
    @classmethod
    def from_url(cls, url, **options):
        sentinels = Sentinel(settings.REDIS_SENTINELS, sentinel_kwargs={"socket_timeout": 2})
        return cls(
            settings.REDIS_SENTINEL_MASTER,
            sentinels,
            **redis_connection_options(url),
            **options,
        )
