"""
Benchmark: requests per second through each server, the generated project against a bare
Django project (`django-admin startproject` plus one JSON view) on the same server, in one
run, so that the figures compare as ratios. Not part of the test suite; run it with the
template's test environment:  .venv/bin/python tests/benchmark.py [seconds]

Bounded: each target gets 32 keep-alive connections on 127.0.0.1 for a few seconds.
"""

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import BIN, PYTHON, Server, environment, free_port, procfile_command, run

sys.path.insert(0, str(Path(__file__).parent))
TEMPLATE = Path(__file__).resolve().parent.parent
CONNECTIONS = 32
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "benchmark-" + "x" * 60,
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
    "HOST": "127.0.0.1",
}

BASELINE_VIEW = """
from django.http import JsonResponse
from django.urls import path


def hello(request):
    return JsonResponse({"hello": "world"})


urlpatterns = [path("hello", hello)]
"""
# The same view, added to the generated project beside its own URLs.
PROJECT_URLS = BASELINE_VIEW.replace(
    'urlpatterns = [path("hello", hello)]',
    'urlpatterns = [path("hello", hello), path("", include("bench.urls"))]',
).replace("import path", "import include, path")


async def load(port, path, seconds):
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Proto: https\r\n\r\n"
    ).encode()
    latencies = []
    deadline = time.monotonic() + seconds

    async def connection():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < deadline:
            began = time.monotonic()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head[:40]
            if b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
            else:  # chunked
                await reader.readuntil(b"0\r\n\r\n")
            latencies.append(time.monotonic() - began)
        writer.close()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    latencies.sort()
    return {
        "rps": len(latencies) / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


def measure(project, command, path, log, **variables):
    env = environment(PORT=free_port(), **PRODUCTION, **variables)
    server = Server(project, command, env, log, ready_path=path)
    try:
        asyncio.run(load(server.port, path, 1.0))  # warm up
        return asyncio.run(load(server.port, path, SECONDS))
    finally:
        server.stop()


def main():
    work = Path(tempfile.mkdtemp(prefix="benchmark-"))
    run(work, [BIN / "django-admin", "startproject", "baseline"], environment())
    baseline = work / "baseline"
    (baseline / "baseline" / "urls.py").write_text(BASELINE_VIEW)
    settings = baseline / "baseline" / "settings.py"
    settings.write_text(
        settings.read_text()
        + "\nimport os\nDEBUG = False\nALLOWED_HOSTS = ['127.0.0.1']\n"
        + "SECRET_KEY = os.environ['DJANGO_SECRET_KEY']\n"
    )
    print(f"{'server':10} {'target':28} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'ratio':>6}")
    for server in ("uvicorn", "daphne", "hypercorn"):
        out = work / server
        subprocess.run(
            [
                BIN / "cookiecutter",
                "--no-input",
                "-o",
                out,
                TEMPLATE,
                f"server={server}",
                "project_name=bench",
            ],
            check=True,
            capture_output=True,
        )
        project = out / "bench"
        probe = work / f"probe-{server}"
        probe.mkdir()
        (probe / "bench_probe_urls.py").write_text(PROJECT_URLS)
        (probe / "bench_probe.py").write_text(
            "from bench.settings import *  # noqa\nROOT_URLCONF = 'bench_probe_urls'\n"
            "SECURE_REDIRECT_EXEMPT = [r'^hello$']\n"
        )
        for args in (["migrate", "--noinput"], ["collectstatic", "--noinput"]):
            run(project, [PYTHON, "manage.py", *args], environment(**PRODUCTION))
        command = procfile_command(project)
        bare_command = command.replace("bench.asgi", "baseline.asgi").replace(
            "--config hypercorn.toml", ""
        )
        bare = measure(baseline, bare_command, "/hello", work / f"{server}-bare.log")
        rows = [
            ("bare startproject, /hello", bare),
            (
                "generated, /hello",
                measure(
                    project,
                    command,
                    "/hello",
                    work / f"{server}-gen.log",
                    PYTHONPATH=probe,
                    DJANGO_SETTINGS_MODULE="bench_probe",
                ),
            ),
            (
                "generated, /healthz",
                measure(project, command, "/healthz", work / f"{server}-hz.log"),
            ),
        ]
        for name, figures in rows:
            print(
                f"{server:10} {name:28} {figures['rps']:8.0f} {figures['p50_ms']:7.1f} "
                f"{figures['p99_ms']:7.1f} {figures['rps'] / bare['rps']:6.2f}"
            )


if __name__ == "__main__":
    main()
