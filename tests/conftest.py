"""
The template's test suite. Fixtures live in plugin modules, each with one job:

- matrix.py: the options of cookiecutter.json and every combination of their answers;
- services.py: throwaway PostgreSQL and Redis servers, started from installed binaries;
- projects.py: baked projects, deployed projects, and their production servers;
- browsing.py: a real browser (headless Chromium) and what a person types into the site;
- parallel.py: how the suite's tests are shared between two processes.

Helpers that tests call directly live in harness.py (processes, HTTP, WebSockets).
"""

pytest_plugins = ["matrix", "services", "projects", "browsing", "parallel"]
