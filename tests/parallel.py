"""
How the suite shares two processes (pytest-xdist: `-n 2`, with `--dist loadgroup` from
pytest.ini): in groups, each run whole by one process, the largest first.

- "deployed": the modules that use the per-combination projects of projects.py
  (`deployed_project`, `production_server`), which each process would otherwise set up again
  for every combination;
- every other module is a group of its own, so that its module-scoped servers start once.

Network namespaces (test_cluster.py) and podman containers (test_containers.py) have names
unique to this machine: each stays within one module, so within one process.
"""

import pytest

DEPLOYED = {
    "test_project",
    "test_serving",
    "test_scaling",
    "test_request_path",
    "test_crashes",
    "test_demo_removal",
    "test_tasks",
    "test_error_reporting",
}
# The longest groups first, so that the shortest fill in at the end (from a run's --durations).
FIRST = ["deployed", "test_containers", "test_cluster", "test_install", "test_first_hour"]


def group_of(item):
    module = item.module.__name__.rpartition(".")[2] if item.module else item.nodeid
    return "deployed" if module in DEPLOYED else module


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of(item)))

    def rank(item):
        group = group_of(item)
        return FIRST.index(group) if group in FIRST else len(FIRST)

    # A stable sort: within a group, pytest's order (which sets up each combination once).
    items.sort(key=rank)
