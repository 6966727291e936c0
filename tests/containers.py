"""Build and run podman containers for the template's tests, without a registry.

This module lets a pytest suite build and run real containers on a machine
that can reach PyPI and a Debian mirror but no container registry. It makes
stand-ins for the official images the generated project uses, so its
Dockerfile and compose file work unchanged:

===========================================  ==================================
tag(s)                                       built from
===========================================  ==================================
``localhost/debian:bookworm`` (+ docker.io   ``debootstrap --variant=minbase``
/library/debian:bookworm, :bookworm-slim)    and ``podman import``
``localhost/python-standin:3.13``            the base plus this machine's pyenv
``docker.io/library/python:3.13-slim``       CPython 3.13, put in /usr/local
``localhost/postgres-standin:15``            Debian's ``postgresql-15`` plus an
``docker.io/library/postgres:17`` (and :16)  entrypoint like the official one
``localhost/redis-standin:7``                Debian's ``redis-server`` (7.0)
``docker.io/library/redis:7``                plus an entrypoint like the
                                             official one
===========================================  ==================================

Usage from a test::

    import containers as ct

    ct.ensure_images()          # ~1 min on a new machine, < 1 s when cached
    with ct.built_image(project_dir) as tag, ct.run_container(tag, port=8000) as c:
        assert "Welcome" in c.wait_for_http("/")
    with ct.compose_project(project_dir / "compose.yml") as stack:
        stack.up(scale={"web": 2})
        stack.wait_healthy("db", "redis")
        stack.exec("web", "python", "manage.py", "check", "--deploy")

Every podman call goes through :func:`podman_env`, which points
``CONTAINERS_CONF`` at a ``containers.conf`` with this machine's two
workarounds (see :func:`containers_conf_text`). Every helper that creates a
container, pod, network, volume or image removes it again, also when the body
of the ``with`` block fails; :func:`cleanup_leftovers` sweeps whatever an
interrupted run left behind.

A missing podman, runc, debootstrap, pyenv CPython 3.13 or podman-compose
raises :class:`ToolMissingError`, whose message is a one-line install hint;
the caller decides whether that is a skip or a failure, e.g.::

    try:
        ct.ensure_images()
    except ct.ToolMissingError as exc:
        pytest.skip(str(exc))

Standard library only (Python 3.11+). Linux only (uses ``fcntl``); building
the stand-ins needs root (debootstrap, rootful podman).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import glob
import hashlib
import importlib.util
import json
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CACHE_DIR",
    "DEBIAN_IMAGE",
    "POSTGRES_IMAGE",
    "PYTHON_IMAGE",
    "PYTHON_STANDIN",
    "REDIS_IMAGE",
    "ComposeProject",
    "Container",
    "ContainerError",
    "ImageTimings",
    "ToolMissingError",
    "build_image",
    "built_image",
    "check_tools",
    "cleanup_leftovers",
    "compose_project",
    "containers_conf_text",
    "ensure_images",
    "podman",
    "podman_env",
    "remove_image",
    "run_container",
    "unique_name",
    "wait_for_http",
]

log = logging.getLogger("template_tests.containers")

# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

#: Where the containers.conf, the build contexts, the lock and the logs live.
#: Survives between runs on the same machine; override with TEMPLATE_TESTS_CACHE.
CACHE_DIR = Path(
    os.environ.get(
        "TEMPLATE_TESTS_CACHE",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "template-tests"
        / "containers",
    )
)

DEBIAN_IMAGE = "localhost/debian:bookworm"
DEBIAN_ALIASES = ("docker.io/library/debian:bookworm", "docker.io/library/debian:bookworm-slim")
PYTHON_STANDIN = "localhost/python-standin:3.13"
PYTHON_IMAGE = "docker.io/library/python:3.13-slim"
PYTHON_ALIASES = (PYTHON_IMAGE,)
POSTGRES_STANDIN = "localhost/postgres-standin:15"
POSTGRES_IMAGE = "docker.io/library/postgres:17"
POSTGRES_ALIASES = (POSTGRES_IMAGE, "docker.io/library/postgres:16")
REDIS_STANDIN = "localhost/redis-standin:7"
REDIS_IMAGE = "docker.io/library/redis:7"
REDIS_ALIASES = (REDIS_IMAGE,)

#: Label on the stand-in images; its value is a hash of the recipe, so a
#: changed recipe (or a changed host CA bundle) rebuilds the image.
RECIPE_LABEL = "org.template-tests.recipe"
#: Label on every container / image / volume the helpers create themselves.
OWNER_LABEL = "org.template-tests.owner"

#: Bump to force a rebuild of every stand-in on every machine.
RECIPE_VERSION = "1"

#: Default prefix of the names the helpers generate (see unique_name()).
DEFAULT_PREFIX = "tt-"

#: Container rlimits wanted; clamped to the host's hard limits (see below).
ULIMITS = {"nofile": 20000, "nproc": 32768}


def containers_conf_text() -> str:
    """The containers.conf with the two workarounds this VM needs.

    - podman's default rlimits (nofile 1048576) are above what the VM lets
      even root set, so every container fails with "error setting rlimit
      type 7: operation not permitted": give limits the host can grant.
    - crun fails with "cgroups in hybrid mode not supported" (field notes;
      crun is not installed on this machine, runc is, so this only pins it).
    """
    limits = []
    for name, want in ULIMITS.items():
        hard = resource.getrlimit(getattr(resource, f"RLIMIT_{name.upper()}"))[1]
        value = want if hard == resource.RLIM_INFINITY else min(want, hard)
        limits.append(f'"{name}={value}:{value}"')
    return (
        "# Written by containers.py (template tests). Passed to podman and\n"
        "# podman-compose through the CONTAINERS_CONF environment variable.\n"
        "[containers]\n"
        f"default_ulimits = [{', '.join(limits)}]\n\n"
        "[engine]\n"
        'runtime = "runc"\n'
    )


HOST_CA_BUNDLE = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
HOST_LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
#: Where the stand-in images keep a copy of the host's CA bundle. No Debian
#: package writes there, so installing/upgrading ca-certificates in a build
#: cannot drop the proxy's CA.
IMAGE_CA_BUNDLE = "/usr/local/share/template-tests/ca-bundle.crt"

PYTHON_RUNTIME_PACKAGES = (
    "ca-certificates netbase tzdata "  # what the official slim image adds
    "libssl3 libsqlite3-0 libffi8 libbz2-1.0 liblzma5 libreadline8 zlib1g "
    "libncursesw6 libgdbm6 libuuid1 libexpat1"
)

DEFAULT_TIMEOUT = 600.0


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class ToolMissingError(RuntimeError):
    """A tool the container tests need is missing. ``str()`` is a one-line hint."""

    def __init__(self, tool: str, hint: str) -> None:
        self.tool = tool
        self.hint = hint
        super().__init__(f"{tool} is not available: {hint}")


class ContainerError(RuntimeError):
    """A podman / podman-compose command failed (or timed out)."""

    def __init__(
        self, cmd: Sequence[str], returncode: int | None, stdout: str, stderr: str, note: str = ""
    ) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        tail = "\n".join((stdout + "\n" + stderr).strip().splitlines()[-40:])
        what = "failed" if returncode is None else f"exited {returncode}"
        msg = f"{' '.join(self.cmd)} {what}"
        if note:
            msg += f" ({note})"
        super().__init__(f"{msg}\n{tail}")


# --------------------------------------------------------------------------
# Environment and running commands
# --------------------------------------------------------------------------


def _containers_conf() -> Path:
    path = CACHE_DIR / "containers.conf"
    text = containers_conf_text()
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomic: concurrent writers never expose a half file
    return path


def podman_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` plus ``CONTAINERS_CONF`` (and ``extra``) for podman calls.

    Use it for every podman, podman-compose and ``podman system service``
    process, so they all get the runc / ulimit workarounds.
    """
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(_containers_conf())
    if extra:
        env.update(extra)
    return env


def _run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    input: str | None = None,
    log_file: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``, capture its output, raise :class:`ContainerError` on failure."""
    cmd = [str(c) for c in cmd]
    log.debug("$ %s", " ".join(cmd))
    try:
        proc = subprocess.run(
            cmd,
            env=dict(env) if env is not None else podman_env(),
            cwd=cwd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        out = (
            exc.stdout.decode(errors="replace")
            if isinstance(exc.stdout, bytes)
            else exc.stdout or ""
        )
        err = (
            exc.stderr.decode(errors="replace")
            if isinstance(exc.stderr, bytes)
            else exc.stderr or ""
        )
        raise ContainerError(cmd, None, out, err, f"timed out after {timeout:.0f}s") from None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}\n[exit {proc.returncode}]\n")
    if check and proc.returncode != 0:
        raise ContainerError(cmd, proc.returncode, proc.stdout, proc.stderr)
    return proc


def podman(
    *args: str,
    check: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``podman ARGS...`` with :func:`podman_env`; output is captured."""
    _require_podman()
    return _run(["podman", *args], check=check, timeout=timeout, input=input)


def unique_name(prefix: str = DEFAULT_PREFIX) -> str:
    """A fresh lowercase name such as ``tt-3f9c2a1b``, valid for containers,
    images, volumes, networks and compose projects."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------
# Tool checks
# --------------------------------------------------------------------------

_HINTS = {
    "podman": "apt-get install -y podman runc",
    "runc": "apt-get install -y runc",
    "debootstrap": "apt-get install -y debootstrap",
    "podman-compose": "pip install podman-compose (1.6 is known to work)",
}


def _require_podman() -> None:
    if shutil.which("podman") is None:
        raise ToolMissingError("podman", _HINTS["podman"])


def _find_python313() -> Path:
    """The prefix of a CPython 3.13 built on this (bookworm) machine by pyenv.

    ``TEMPLATE_TESTS_PYTHON_PREFIX`` overrides the search.
    """
    override = os.environ.get("TEMPLATE_TESTS_PYTHON_PREFIX")
    candidates: list[Path] = []
    if override:
        candidates.append(Path(override))
    else:
        root = os.environ.get("PYENV_ROOT")
        if not root and shutil.which("pyenv"):
            proc = subprocess.run(["pyenv", "root"], capture_output=True, text=True)
            root = proc.stdout.strip() if proc.returncode == 0 else None
        root = root or str(Path.home() / ".pyenv")

        def version_key(p: str) -> tuple[int, ...]:
            m = re.fullmatch(r"3\.13\.(\d+)", Path(p).name)
            return (int(m.group(1)),) if m else (-1,)

        found = [p for p in glob.glob(f"{root}/versions/3.13.*") if version_key(p) != (-1,)]
        candidates.extend(Path(p) for p in sorted(found, key=version_key, reverse=True))
    for prefix in candidates:
        if (prefix / "bin" / "python3.13").is_file():
            return prefix
    raise ToolMissingError(
        "CPython 3.13 (pyenv)",
        "pyenv install 3.13.0 (or set TEMPLATE_TESTS_PYTHON_PREFIX to a bookworm-built CPython 3.13)",
    )


def _compose_command() -> list[str]:
    if importlib.util.find_spec("podman_compose") is not None:
        return [sys.executable, "-m", "podman_compose"]
    exe = shutil.which("podman-compose")
    if exe:
        return [exe]
    raise ToolMissingError("podman-compose", _HINTS["podman-compose"])


def check_tools(*, build: bool = True, compose: bool = True) -> None:
    """Raise :class:`ToolMissingError` unless everything needed is installed.

    ``build``: also what building the stand-in images needs (root,
    debootstrap, a pyenv CPython 3.13). ``compose``: also podman-compose.
    """
    _require_podman()
    if shutil.which("runc") is None and not Path("/usr/sbin/runc").exists():
        raise ToolMissingError("runc", _HINTS["runc"])
    if build:
        if os.geteuid() != 0:
            raise ToolMissingError(
                "root", "run the container tests as root (debootstrap and rootful podman)"
            )
        if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
            raise ToolMissingError("debootstrap", _HINTS["debootstrap"])
        _find_python313()
    if compose:
        _compose_command()


# --------------------------------------------------------------------------
# Image helpers
# --------------------------------------------------------------------------


def _image_id(ref: str) -> str | None:
    proc = podman("image", "inspect", "--format", "{{.Id}}", ref, check=False, timeout=60)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def _image_label(ref: str, label: str) -> str | None:
    proc = podman(
        "image",
        "inspect",
        "--format",
        f'{{{{index .Config.Labels "{label}"}}}}',
        ref,
        check=False,
        timeout=60,
    )
    if proc.returncode != 0:
        return None
    value = proc.stdout.strip()
    return None if value in ("", "<no value>") else value


def build_image(
    context: str | os.PathLike[str],
    tag: str | None = None,
    *,
    dockerfile: str | os.PathLike[str] | None = None,
    build_args: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float | None = 1800,
    log_file: Path | None = None,
) -> str:
    """``podman build`` a directory; return the tag (a fresh one if not given).

    Never pulls (``--pull=never``): every FROM must resolve to a local image,
    so a missing stand-in fails at once instead of hanging on a registry.
    Failed builds do not leave working containers behind (``--force-rm``).
    """
    _require_podman()
    tag = tag or f"localhost/{unique_name()}:test"
    cmd = [
        "podman",
        "build",
        "--pull=never",
        "--force-rm",
        "--tag",
        tag,
        "--label",
        f"{OWNER_LABEL}=template-tests",
    ]
    if dockerfile is not None:
        cmd += ["--file", str(dockerfile)]
    for key, value in (build_args or {}).items():
        cmd += ["--build-arg", f"{key}={value}"]
    for key, value in (labels or {}).items():
        cmd += ["--label", f"{key}={value}"]
    cmd += [*extra_args, str(context)]
    try:
        _run(cmd, timeout=timeout, log_file=log_file)
    except ContainerError as error:
        # podman's storage sometimes loses a stage's layer under a multi-stage build's
        # COPY --from ("layer not known": podman issue 14350, a known flake), or, with two
        # builds at once, a build container it then fails to remove after tagging the image
        # ("identifier is not a container", exit 125; seen in CI): once more.
        output = error.stdout + error.stderr
        if "layer not known" not in output and "identifier is not a container" not in output:
            raise
        log.warning("podman build lost a layer or a build container; building again")
        _run(cmd, timeout=timeout, log_file=log_file)
    return tag


def remove_image(tag: str) -> None:
    """Remove one tag (and the image once no tag is left). Never fails.

    Note: ``podman untag IMAGE`` without a name drops *every* tag of the image;
    this helper removes exactly the name it is given.
    """
    podman("rmi", "--force", tag, check=False, timeout=120)


@contextlib.contextmanager
def built_image(
    context: str | os.PathLike[str],
    tag: str | None = None,
    *,
    keep: bool = False,
    **kwargs: object,
) -> Iterator[str]:
    """Context manager: :func:`build_image`, then remove the image (unless ``keep``)."""
    tag = tag or f"localhost/{unique_name()}:test"
    try:
        yield build_image(context, tag, **kwargs)  # type: ignore[arg-type]
    finally:
        if not keep:
            remove_image(tag)


# --------------------------------------------------------------------------
# Stand-in images
# --------------------------------------------------------------------------


@dataclasses.dataclass
class ImageTimings:
    """What :func:`ensure_images` did, with wall-clock seconds per step."""

    steps: dict[str, float] = dataclasses.field(default_factory=dict)
    built: list[str] = dataclasses.field(default_factory=list)
    cached: list[str] = dataclasses.field(default_factory=list)
    total: float = 0.0

    def __str__(self) -> str:
        parts = [f"{k}={v:.1f}s" for k, v in self.steps.items()]
        return (
            f"ensure_images: total {self.total:.1f}s; built {self.built or '-'}; "
            f"cached {self.cached or '-'}; " + ", ".join(parts)
        )


@contextlib.contextmanager
def _step(timings: ImageTimings, name: str) -> Iterator[None]:
    log.info("ensure_images: %s ...", name)
    start = time.monotonic()
    try:
        yield
    finally:
        timings.steps[name] = round(time.monotonic() - start, 2)
        log.info("ensure_images: %s took %.1fs", name, timings.steps[name])


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float = 3600) -> Iterator[float]:
    """Exclusive flock on ``path``; yields the seconds spent waiting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with path.open("a") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - start > timeout:
                    raise TimeoutError(f"could not lock {path} in {timeout:.0f}s") from None
                time.sleep(0.5)
        try:
            yield time.monotonic() - start
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _parse_apt_sources() -> list[tuple[str, list[str], list[str]]]:
    """Enabled deb entries of the host's apt sources: (uri, suites, components)."""
    entries: list[tuple[str, list[str], list[str]]] = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", Path(path).read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                continue
            for uri in fields.get("uris", "").split():
                entries.append(
                    (uri, fields.get("suites", "").split(), fields.get("components", "").split())
                )
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        if not os.path.isfile(path):
            continue
        for line in Path(path).read_text().splitlines():
            line = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(line) >= 3 and line[0] == "deb":
                entries.append((line[1], [line[2]], line[3:]))
    return entries


def _debian_mirror() -> tuple[str, str]:
    """(mirror, security mirror) the host's apt uses for bookworm.

    ``TEMPLATE_TESTS_DEBIAN_MIRROR`` overrides the first.
    """
    mirror = os.environ.get("TEMPLATE_TESTS_DEBIAN_MIRROR")
    security = None
    for uri, suites, _ in _parse_apt_sources():
        if "bookworm-security" in suites and security is None:
            security = uri
        elif "bookworm" in suites and mirror is None and "security" not in uri:
            mirror = uri
    mirror = (mirror or "http://deb.debian.org/debian").rstrip("/")
    security = (security or mirror.rsplit("/", 1)[0] + "/debian-security").rstrip("/")
    return mirror, security


def _host_apt_acquire_conf() -> str:
    """The host's apt settings about reaching the mirror (Acquire::*: proxies,
    Check-Valid-Until for a snapshot mirror, ...), to reuse inside images."""
    chunks = []
    for path in sorted(glob.glob("/etc/apt/apt.conf.d/*")) + ["/etc/apt/apt.conf"]:
        if not os.path.isfile(path):
            continue
        text = Path(path).read_text(errors="replace")
        lines = [
            ln
            for ln in text.splitlines()
            if re.match(r"\s*Acquire::", ln) and "IndexTargets" not in ln
        ]
        if lines:
            chunks.append(f"// from the host's {path}\n" + "\n".join(lines))
    return "\n".join(chunks) + "\n" if chunks else ""


def _host_local_cas() -> dict[str, bytes]:
    """The host's extra CAs (e.g. a TLS-intercepting proxy's)."""
    out = {}
    if HOST_LOCAL_CA_DIR.is_dir():
        for p in sorted(HOST_LOCAL_CA_DIR.rglob("*.crt")):
            out[p.name] = p.read_bytes()
    return out


def _sha(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


# The apt/dpkg settings of the official Debian images (debuerreotype).
_APT_DOCKER_CONF = {
    "etc/apt/apt.conf.d/docker-clean": textwrap.dedent("""\
        DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
        APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
        Dir::Cache::pkgcache "";
        Dir::Cache::srcpkgcache "";
        """),
    "etc/apt/apt.conf.d/docker-no-languages": 'Acquire::Languages "none";\n',
    "etc/apt/apt.conf.d/docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
    "etc/apt/apt.conf.d/docker-autoremove-suggests": 'Apt::AutoRemove::SuggestsImportant "false";\n',
    "etc/dpkg/dpkg.cfg.d/docker-apt-speedup": "force-unsafe-io\n",
    "usr/sbin/policy-rc.d": "#!/bin/sh\n# no daemons start during image builds\nexit 101\n",
}


def _debian_recipe() -> tuple[str, dict[str, bytes]]:
    """(recipe hash, files to add to the debootstrapped root)."""
    mirror, security = _debian_mirror()
    sources = textwrap.dedent(f"""\
        Types: deb
        URIs: {mirror}
        Suites: bookworm bookworm-updates
        Components: main
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

        Types: deb
        URIs: {security}
        Suites: bookworm-security
        Components: main
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
        """)
    bundle = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.is_file() else b""
    files: dict[str, bytes] = {k: v.encode() for k, v in _APT_DOCKER_CONF.items()}
    files["etc/apt/sources.list.d/debian.sources"] = sources.encode()
    acquire = _host_apt_acquire_conf()
    if acquire:
        files["etc/apt/apt.conf.d/90template-tests-host"] = acquire.encode()
    if bundle:
        files[IMAGE_CA_BUNDLE.lstrip("/")] = bundle
        # Also where curl/openssl look by default, until ca-certificates is
        # installed (its update-ca-certificates then rebuilds this file from
        # Mozilla's list plus usr/local/share/ca-certificates/, below).
        files["etc/ssl/certs/ca-certificates.crt"] = bundle
    for name, data in _host_local_cas().items():
        files[f"usr/local/share/ca-certificates/{name}"] = data
    recipe = _sha(RECIPE_VERSION, "debian", *sorted(files), *files.values())
    return recipe, files


def _debian_env_changes(recipe: str) -> list[str]:
    changes = [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        'CMD ["bash"]',
        f"LABEL {RECIPE_LABEL}={recipe}",
    ]
    if HOST_CA_BUNDLE.is_file():
        # Stand-in only: the official images need no such thing, but here TLS
        # to PyPI goes through a proxy whose CA only the host's bundle has.
        changes += [
            f"ENV {var}={IMAGE_CA_BUNDLE}"
            for var in ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE")
        ]
    # Proxy variables (http_proxy, ...) are not baked in: podman passes the
    # host's to builds and containers by itself (--http-proxy, default true).
    return changes


def _build_debian(timings: ImageTimings, recipe: str, files: dict[str, bytes]) -> None:
    mirror, _ = _debian_mirror()
    logs = CACHE_DIR / "logs"
    workdir = Path(tempfile.mkdtemp(prefix="debian-rootfs-", dir=CACHE_DIR))
    rootfs = workdir / "rootfs"
    try:
        with _step(timings, "debian:debootstrap"):
            _run(
                ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror],
                timeout=1800,
                env=dict(os.environ),
                log_file=logs / "debootstrap.log",
            )
        with _step(timings, "debian:customize"):
            (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
            for rel, data in files.items():
                target = rootfs / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            (rootfs / "usr/sbin/policy-rc.d").chmod(0o755)
            # slim like the official images: no apt lists/caches, docs, man pages
            for pattern in (
                "var/lib/apt/lists/*",
                "var/cache/apt/*.bin",
                "var/cache/apt/archives/*.deb",
                "var/log/*.log",
                "usr/share/doc/*",
                "usr/share/man/*",
                "usr/share/info/*",
            ):
                for p in glob.glob(str(rootfs / pattern)):
                    if os.path.isdir(p) and not os.path.islink(p):
                        shutil.rmtree(p)
                    else:
                        os.unlink(p)
        with _step(timings, "debian:import"):
            changes: list[str] = []
            for change in _debian_env_changes(recipe):
                changes += ["--change", change]
            tar = subprocess.Popen(
                ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
            )
            try:
                proc = subprocess.run(
                    ["podman", "import", *changes, "-", DEBIAN_IMAGE],
                    stdin=tar.stdout,
                    capture_output=True,
                    text=True,
                    env=podman_env(),
                    timeout=600,
                )
            finally:
                assert tar.stdout is not None
                tar.stdout.close()
                tar.wait()
            if proc.returncode != 0 or tar.returncode != 0:
                raise ContainerError(
                    ["podman", "import", DEBIAN_IMAGE],
                    proc.returncode,
                    proc.stdout,
                    proc.stderr,
                    f"tar exited {tar.returncode}",
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


_PYTHON_DOCKERFILE = """\
# Stand-in for docker.io/library/python:3.13-slim, built without a registry.
FROM {base}
ARG HOST_PREFIX
ENV LANG=C.UTF-8 \\
    PYTHON_VERSION={version} \\
    UV_PYTHON_DOWNLOADS=never
RUN set -eux; \\
    apt-get update; \\
    apt-get install -y --no-install-recommends {packages}; \\
    rm -rf /var/lib/apt/lists/*; \\
    tar -C /opt/host-python -cf - \\
        --exclude=./lib/python3.13/test \\
        --exclude=./lib/python3.13/idlelib/idle_test \\
        --exclude='./lib/python3.13/site-packages/_sandboxing*' \\
        --exclude='*.a' \\
        . | tar -C /usr/local -xf -; \\
    grep -rlI -e "$HOST_PREFIX" /usr/local/bin /usr/local/lib/pkgconfig \\
        /usr/local/lib/python3.13/_sysconfigdata_* /usr/local/lib/python3.13/config-3.13-* \\
        | xargs -r sed -i "s|$HOST_PREFIX|/usr/local|g"; \\
    ldconfig; \\
    for n in python python3 pip pip3; do \\
        ln -sf "$(case $n in pip*) echo pip3.13;; *) echo python3.13;; esac)" /usr/local/bin/$n; \\
    done; \\
    find /usr/local -depth -type d -name __pycache__ -path '*/test*' -exec rm -rf '{{}}' +; \\
    python -c 'import ssl, sqlite3, ctypes, bz2, lzma, readline, zlib, uuid, decimal, curses, hashlib, json; print(ssl.OPENSSL_VERSION)'; \\
    python3 --version; pip --version
CMD ["python3"]
"""

_POSTGRES_DOCKERFILE = """\
# Stand-in for docker.io/library/postgres (Debian's PostgreSQL 15).
FROM {base}
RUN set -eux; \\
    mkdir -p /etc/postgresql-common/createcluster.d; \\
    echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/no-main-cluster.conf; \\
    apt-get update; \\
    apt-get install -y --no-install-recommends postgresql-15 gosu; \\
    rm -rf /var/lib/apt/lists/*; \\
    mkdir -p /var/lib/postgresql/data /var/run/postgresql /docker-entrypoint-initdb.d; \\
    chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql; \\
    chmod 3777 /var/run/postgresql
ENV LANG=C.UTF-8 PG_MAJOR=15 PGDATA=/var/lib/postgresql/data \\
    PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
"""

_POSTGRES_ENTRYPOINT = r"""#!/usr/bin/env bash
# Subset of the official postgres image's docker-entrypoint.sh:
# POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB / POSTGRES_HOST_AUTH_METHOD /
# POSTGRES_INITDB_ARGS and /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz.
set -Eeo pipefail

if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi

if [ "$1" = 'postgres' ] && [ "$(id -u)" = '0' ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA" || :
    chmod 3777 /var/run/postgresql
    exec gosu postgres "${BASH_SOURCE[0]}" "$@"
fi

if [ "$1" = 'postgres' ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_USER:=postgres}"
    : "${POSTGRES_DB:=$POSTGRES_USER}"
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != 'trust' ]; then
        cat >&2 <<-'EOE'
		Error: Database is uninitialized and superuser password is not specified.
		       You must specify POSTGRES_PASSWORD to a non-empty value for the
		       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
		       (or POSTGRES_HOST_AUTH_METHOD=trust, not recommended)
		EOE
        exit 1
    fi
    pwfile="$(mktemp)"
    printf '%s\n' "${POSTGRES_PASSWORD:-}" > "$pwfile"
    # UTF8 explicitly: without it initdb picks SQL_ASCII here and Django breaks.
    # shellcheck disable=SC2086
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA"
    rm -f "$pwfile"
    auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
    [ -n "${POSTGRES_PASSWORD:-}" ] || auth=trust
    printf '\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"
    printf "\nlisten_addresses = '*'\n" >> "$PGDATA/postgresql.conf"

    # Temporary server for the init steps, on a private socket directory and
    # no TCP, so health checks (pg_isready) only pass once the real server runs.
    initsock="$(mktemp -d)"
    export PGHOST="$initsock" PGUSER="$POSTGRES_USER" PGPASSWORD="${POSTGRES_PASSWORD:-}"
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=$initsock" start
    psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER")
    if [ "$POSTGRES_DB" != 'postgres' ]; then
        "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<-'EOSQL'
			CREATE DATABASE :"db" ;
		EOSQL
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh) echo "running $f"; . "$f" ;;
            *.sql) echo "running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
            *.sql.gz) echo "running $f"; gunzip -c "$f" | "${psql[@]}" --dbname "$POSTGRES_DB" ;;
            *) [ -e "$f" ] && echo "ignoring $f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    rm -rf "$initsock"
    unset PGHOST PGUSER PGPASSWORD
    echo 'PostgreSQL init process complete; ready for start up.'
fi

exec "$@"
"""

_REDIS_DOCKERFILE = """\
# Stand-in for docker.io/library/redis:7 (Debian's redis-server 7.0).
FROM {base}
RUN set -eux; \\
    apt-get update; \\
    apt-get install -y --no-install-recommends redis-server gosu; \\
    rm -rf /var/lib/apt/lists/*; \\
    mkdir -p /data; chown redis:redis /data
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /data
WORKDIR /data
ENTRYPOINT ["docker-entrypoint.sh"]
EXPOSE 6379
CMD ["redis-server"]
"""

_REDIS_ENTRYPOINT = r"""#!/bin/sh
# Subset of the official redis image's docker-entrypoint.sh.
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then set -- redis-server "$@"; fi
if [ "$1" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec gosu redis "$0" "$@"
fi
if [ "$1" = 'redis-server' ]; then
    # like the official image: no config file => listen on all interfaces,
    # protected mode off (it is behind the container network anyway)
    doProtectedMode=1
    configFile=
    if [ -f "${2:-}" ]; then
        configFile="$2"
        if grep -q '^protected-mode' "$configFile"; then doProtectedMode=; fi
    fi
    if [ "$doProtectedMode" ]; then
        shift
        [ -n "$configFile" ] && shift
        set -- --protected-mode no "$@"
        [ -n "$configFile" ] && set -- "$configFile" "$@"
        set -- redis-server "$@"
    fi
fi
umask 0077
exec "$@"
"""


def _write_context(name: str, files: Mapping[str, str]) -> Path:
    ctx = CACHE_DIR / "build" / name
    if ctx.exists():
        shutil.rmtree(ctx)
    ctx.mkdir(parents=True)
    for rel, text in files.items():
        p = ctx / rel
        p.write_text(text)
        if rel.endswith(".sh"):
            p.chmod(0o755)
    return ctx


def _tag_all(source: str, aliases: Sequence[str]) -> None:
    want = _image_id(source)
    for alias in aliases:
        if _image_id(alias) != want:
            if _image_id(alias) is not None and _image_label(alias, RECIPE_LABEL) is None:
                log.warning("replacing the tag %s of an image not built by containers.py", alias)
            podman("tag", source, alias, timeout=60)


def _up_to_date(ref: str, recipe: str) -> bool:
    return _image_label(ref, RECIPE_LABEL) == recipe


def _drop_if_dangling(image_id: str | None) -> None:
    """Remove a replaced stand-in once nothing refers to it any more."""
    if image_id:
        proc = podman(
            "image", "inspect", "--format", "{{len .RepoTags}}", image_id, check=False, timeout=60
        )
        if proc.returncode == 0 and proc.stdout.strip() == "0":
            podman("rmi", image_id, check=False, timeout=120)


@dataclasses.dataclass(frozen=True)
class _StandIn:
    name: str
    tag: str
    aliases: tuple[str, ...]
    files: dict[str, str]
    build_args: dict[str, str] = dataclasses.field(default_factory=dict)
    extra_args: tuple[str, ...] = ()
    salt: str = ""


def _standins(prefix: Path, version: str) -> list[_StandIn]:
    return [
        _StandIn(
            "python",
            PYTHON_STANDIN,
            PYTHON_ALIASES,
            {
                "Dockerfile": _PYTHON_DOCKERFILE.format(
                    base=DEBIAN_IMAGE, version=version, packages=PYTHON_RUNTIME_PACKAGES
                )
            },
            {"HOST_PREFIX": str(prefix)},
            # build-time bind mount: no 300 MB copy into a build context
            ("--volume", f"{prefix}:/opt/host-python:ro"),
            salt=f"{prefix} {version}",
        ),
        _StandIn(
            "postgres",
            POSTGRES_STANDIN,
            POSTGRES_ALIASES,
            {
                "Dockerfile": _POSTGRES_DOCKERFILE.format(base=DEBIAN_IMAGE),
                "docker-entrypoint.sh": _POSTGRES_ENTRYPOINT,
            },
        ),
        _StandIn(
            "redis",
            REDIS_STANDIN,
            REDIS_ALIASES,
            {
                "Dockerfile": _REDIS_DOCKERFILE.format(base=DEBIAN_IMAGE),
                "docker-entrypoint.sh": _REDIS_ENTRYPOINT,
            },
        ),
    ]


def _ensure_standin(spec: _StandIn, base_recipe: str, force: bool, timings: ImageTimings) -> None:
    recipe = _sha(
        RECIPE_VERSION, spec.name, base_recipe, spec.salt, json.dumps(spec.files, sort_keys=True)
    )
    old_id = _image_id(spec.tag)
    if force or not _up_to_date(spec.tag, recipe):
        ctx = _write_context(spec.name, spec.files)
        log_file = CACHE_DIR / "logs" / f"{spec.name}.log"
        log_file.unlink(missing_ok=True)
        with _step(timings, f"{spec.name}:build"):
            build_image(
                ctx,
                spec.tag,
                build_args=spec.build_args,
                labels={RECIPE_LABEL: recipe},
                extra_args=["--layers=false", *spec.extra_args],
                timeout=1800,
                log_file=log_file,
            )
        timings.built.append(spec.tag)
    else:
        timings.cached.append(spec.tag)
    _tag_all(spec.tag, spec.aliases)
    if old_id and old_id != _image_id(spec.tag):
        _drop_if_dangling(old_id)


def ensure_images(*, rebuild: bool = False, parallel: bool = True) -> ImageTimings:
    """Build the stand-in images that are missing or outdated; return timings.

    Idempotent and cached between runs on the same machine: each image carries
    a hash of its recipe (Dockerfile, entrypoint, host CA bundle, mirror,
    Python build) and is rebuilt only when that changes, or with
    ``rebuild=True``. A file lock makes concurrent callers (pytest-xdist
    workers, two suites) wait for each other instead of racing. ``parallel``
    builds the Python, PostgreSQL and Redis stand-ins at the same time (they
    only share the Debian base). Build logs: ``CACHE_DIR/logs/``.
    """
    timings = ImageTimings()
    start = time.monotonic()
    with _step(timings, "check-tools"):
        check_tools(build=True, compose=False)
    with _file_lock(CACHE_DIR / "images.lock") as waited:
        timings.steps["lock-wait"] = round(waited, 2)

        # 1. the Debian base
        base_recipe, base_files = _debian_recipe()
        old_base = _image_id(DEBIAN_IMAGE)
        if rebuild or not _up_to_date(DEBIAN_IMAGE, base_recipe):
            _build_debian(timings, base_recipe, base_files)
            timings.built.append(DEBIAN_IMAGE)
        else:
            timings.cached.append(DEBIAN_IMAGE)
        _tag_all(DEBIAN_IMAGE, DEBIAN_ALIASES)

        # 2. Python, PostgreSQL and Redis stand-ins, all FROM the base
        prefix = _find_python313()
        version = subprocess.run(
            [
                str(prefix / "bin/python3.13"),
                "-c",
                "import platform; print(platform.python_version())",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        force = rebuild or DEBIAN_IMAGE in timings.built
        specs = _standins(prefix, version)
        if parallel:
            with _step(timings, "standins (parallel)"):
                with concurrent.futures.ThreadPoolExecutor(len(specs)) as pool:
                    futures = [
                        pool.submit(_ensure_standin, spec, base_recipe, force, timings)
                        for spec in specs
                    ]
                    for future in futures:
                        future.result()  # re-raises the first failure
        else:
            for spec in specs:
                _ensure_standin(spec, base_recipe, force, timings)
        if old_base and old_base != _image_id(DEBIAN_IMAGE):
            _drop_if_dangling(old_base)
    timings.total = round(time.monotonic() - start, 2)
    log.info("%s", timings)
    return timings


# --------------------------------------------------------------------------
# Single containers
# --------------------------------------------------------------------------


def wait_for_http(
    url: str, *, timeout: float = 60, expect_status: int | None = 200, interval: float = 0.5
) -> str:
    """Poll ``url`` until it answers (``expect_status``; None: any); return the body.

    Loopback only in practice; proxies from the environment are ignored.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            with opener.open(url, timeout=10) as resp:
                body: str = resp.read().decode(errors="replace")
                if expect_status is None or resp.status == expect_status:
                    return body
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            if expect_status is None or exc.code == expect_status:
                return exc.read().decode(errors="replace")
            last = f"HTTP {exc.code}"
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f}s (last: {last})")
        time.sleep(interval)


@dataclasses.dataclass
class Container:
    """A running container started by :func:`run_container`."""

    name: str
    image: str
    host_port: int | None = None

    @property
    def base_url(self) -> str:
        if self.host_port is None:
            raise ValueError(f"{self.name} has no published port")
        return f"http://127.0.0.1:{self.host_port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def logs(self) -> str:
        """stdout and stderr of the container so far."""
        proc = podman("logs", self.name, check=False, timeout=60)
        return proc.stdout + proc.stderr

    def exec(
        self,
        *cmd: str,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float | None = 120,
    ) -> subprocess.CompletedProcess[str]:
        """``podman exec`` into the container; output captured."""
        args = ["exec"]
        if user:
            args += ["--user", user]
        for k, v in (env or {}).items():
            args += ["--env", f"{k}={v}"]
        return podman(*args, self.name, *cmd, check=check, timeout=timeout)

    def inspect(self) -> dict[str, Any]:
        """``podman inspect`` as a dict."""
        data: list[dict[str, Any]] = json.loads(podman("inspect", self.name, timeout=60).stdout)
        return data[0]

    def exit_code(self) -> int | None:
        """Exit code once the container has exited (None while it runs)."""
        if self.state() == "running":
            return None
        out = podman(
            "inspect", "--format", "{{.State.ExitCode}}", self.name, check=False, timeout=60
        ).stdout.strip()
        return int(out) if out.lstrip("-").isdigit() else None

    def state(self) -> str:
        proc = podman(
            "inspect", "--format", "{{.State.Status}}", self.name, check=False, timeout=60
        )
        return proc.stdout.strip() if proc.returncode == 0 else "missing"

    def wait_for_http(
        self, path: str = "/", *, timeout: float = 60, expect_status: int | None = 200
    ) -> str:
        """Poll the published port; fail fast (with the logs) if the container exits."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return wait_for_http(
                    self.url(path),
                    timeout=min(2.0, max(0.1, deadline - time.monotonic())),
                    expect_status=expect_status,
                )
            except TimeoutError:
                state = self.state()
                if state not in ("running", "created", "configured"):
                    raise ContainerError(
                        ["podman", "run", self.image],
                        self.exit_code(),
                        self.logs(),
                        "",
                        f"the container is {state}",
                    ) from None
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{self.url(path)} did not answer within {timeout:.0f}s;"
                        f" logs:\n{self.logs()[-4000:]}"
                    ) from None

    def stop(self, timeout: int = 10) -> int:
        """``podman stop --time TIMEOUT``; return the container's exit code."""
        podman("stop", "--time", str(timeout), self.name, timeout=timeout + 60)
        return int(
            podman("inspect", "--format", "{{.State.ExitCode}}", self.name, timeout=60).stdout
        )


def _published_port(container: Container, port: int, timeout: float = 10) -> int:
    """Host port of ``port``/tcp; a container that already exited has none."""
    deadline = time.monotonic() + timeout
    while True:
        out = podman("port", container.name, f"{port}/tcp", check=False, timeout=60).stdout.split()
        if out:
            return int(out[0].rsplit(":", 1)[1])
        state = container.state()
        if state != "running" or time.monotonic() > deadline:
            raise ContainerError(
                ["podman", "run", container.image],
                container.exit_code(),
                container.logs(),
                "",
                f"the container is {state}, no port {port}",
            )
        time.sleep(0.2)


@contextlib.contextmanager
def run_container(
    image: str,
    *,
    port: int | None = None,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] = (),
    network: str | None = None,
    volumes: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    stop_timeout: int = 2,
) -> Iterator[Container]:
    """Run ``image`` detached; stop and remove it on exit, even on failure.

    ``port``: container port to publish on a free loopback port
    (``-p 127.0.0.1::PORT``, podman picks it: no race between callers).
    ``stop_timeout`` (seconds between SIGTERM and SIGKILL at exit) is short
    because a PID 1 without a SIGTERM handler (``python -m http.server``)
    ignores SIGTERM and always costs the full timeout. Call
    :meth:`Container.stop` in the body to test a graceful stop.
    Anonymous volumes (from VOLUME lines) are removed with the container.
    """
    name = name or unique_name()
    args = [
        "run",
        "--detach",
        "--name",
        name,
        "--label",
        f"{OWNER_LABEL}=template-tests",
        "--stop-timeout",
        str(stop_timeout),
        "--pull=never",
    ]
    if port is not None:
        args += ["--publish", f"127.0.0.1::{port}"]
    for k, v in (env or {}).items():
        args += ["--env", f"{k}={v}"]
    if network:
        args += ["--network", network]
    for vol in volumes:
        args += ["--volume", vol]
    args += [*extra_args, image, *command]
    container = Container(name=name, image=image)
    try:
        podman(*args, timeout=300)
        if port is not None:
            container.host_port = _published_port(container, port)
        yield container
    finally:
        podman(
            "rm",
            "--force",
            "--volumes",
            "--time",
            str(stop_timeout),
            name,
            check=False,
            timeout=stop_timeout + 120,
        )


# --------------------------------------------------------------------------
# Compose
# --------------------------------------------------------------------------


class ComposeProject:
    """A podman-compose project with a unique name; see :func:`compose_project`.

    podman-compose 1.6 with podman 4.3 ignores ``depends_on: condition:
    service_healthy`` (it needs podman >= 4.6), and podman runs no health
    check by itself without systemd: use :meth:`wait_healthy`, which runs
    them (``podman healthcheck run``).
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike[str]],
        project: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        in_pod: bool | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.files = [Path(f).resolve() for f in files]
        self.project = project or unique_name()
        self.env = dict(env or {})
        self.in_pod = in_pod
        self.cwd = Path(cwd) if cwd else self.files[0].parent
        self.scale: dict[str, int] = {}

    # -- running podman-compose --------------------------------------------

    def compose(
        self, *args: str, check: bool = True, timeout: float | None = DEFAULT_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run ``podman-compose -p PROJECT -f FILE... ARGS...`` in the file's directory."""
        cmd = [*_compose_command(), "-p", self.project]
        if self.in_pod is not None:
            cmd[-2:-2] = ["--in-pod", "true" if self.in_pod else "false"]
        for f in self.files:
            cmd += ["-f", str(f)]
        return _run(
            [*cmd, *args], check=check, timeout=timeout, env=podman_env(self.env), cwd=self.cwd
        )

    def up(
        self,
        *services: str,
        scale: Mapping[str, int] | None = None,
        build: bool = False,
        no_deps: bool = False,
        timeout: float | None = 1800,
    ) -> subprocess.CompletedProcess[str]:
        """``up -d [--build] [--no-deps] [--scale S=N]... [SERVICES]``. Never pulls."""
        args = ["up", "-d", "--pull", "never"]
        if build:
            args.append("--build")
        if no_deps:
            args.append("--no-deps")
        for svc, n in (scale or {}).items():
            args += ["--scale", f"{svc}={n}"]
            self.scale[svc] = n
        proc = self.compose(*args, *services, timeout=timeout)
        # podman-compose may exit 0 although a container could not start
        # (e.g. a port conflict): it then stays "created".
        stuck = [str(c["Names"][0]) for c in self.containers() if c["State"] == "created"]
        if stuck:
            raise ContainerError(
                ["podman-compose", *args],
                0,
                proc.stdout,
                proc.stderr,
                "created but not started: " + ", ".join(stuck),
            )
        return proc

    def down(self, timeout: int = 2) -> None:
        """``down -v``, then remove what it misses (it exits 0 regardless):

        - scaled replicas (``down`` only knows the file's replica count), and
          so the network they still use;
        - anonymous volumes (image ``VOLUME`` lines, e.g. redis's /data):
          podman-compose removes containers without ``--volumes`` and
          ``down -v`` only removes the project's named volumes.
        """
        anonymous: list[str] = []
        try:
            anonymous = self._anonymous_volumes()
            self.compose("down", "-v", "-t", str(timeout), check=False, timeout=300)
        finally:
            self._sweep(anonymous)

    def _anonymous_volumes(self) -> list[str]:
        names = []
        for c in self.containers():
            fmt = '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}'
            out = podman("inspect", "--format", fmt, str(c["Id"]), check=False, timeout=60).stdout
            names += [n for n in out.split() if re.fullmatch(r"[0-9a-f]{64}", n)]
        return names

    def _sweep(self, anonymous: Sequence[str] = ()) -> None:
        label = f"label=io.podman.compose.project={self.project}"
        ids = podman("ps", "-a", "-q", "--filter", label, check=False, timeout=60).stdout.split()
        if ids:
            podman("rm", "--force", "--volumes", "--time", "0", *ids, check=False, timeout=300)
        podman("pod", "rm", "--force", "--ignore", f"pod_{self.project}", check=False, timeout=120)
        for kind in ("volume", "network"):
            names = podman(
                kind, "ls", "-q", "--filter", label, check=False, timeout=60
            ).stdout.split()
            for n in names:
                podman(kind, "rm", "--force", n, check=False, timeout=120)
        existing = set(podman("volume", "ls", "-q", check=False, timeout=60).stdout.split())
        for n in anonymous:
            if n in existing:
                podman("volume", "rm", "--force", n, check=False, timeout=120)

    def ps(self) -> str:
        """``podman-compose ps`` (text, for logs and reports)."""
        return self.compose("ps", check=False, timeout=120).stdout

    def stop(self, *services: str, timeout: int = 5) -> None:
        """``podman-compose stop [-t N] SERVICE...``."""
        self.compose("stop", "-t", str(timeout), *services, timeout=300)

    def start(self, *services: str) -> None:
        self.compose("start", *services, timeout=300)

    def logs(self, service: str | None = None) -> str:
        """Logs of every container of ``service`` (all services if None)."""
        out = []
        for c in self.containers(service):
            name = c["Names"][0]
            proc = podman("logs", name, check=False, timeout=60)
            out.append(f"===== {name} =====\n{proc.stdout}{proc.stderr}")
        return "\n".join(out)

    # -- inspecting ----------------------------------------------------------

    def containers(self, service: str | None = None) -> list[dict[str, Any]]:
        """``podman ps -a`` entries (JSON dicts) of this project, sorted by name."""
        args = [
            "ps",
            "-a",
            "--format",
            "json",
            "--filter",
            f"label=io.podman.compose.project={self.project}",
        ]
        if service:
            args += ["--filter", f"label=io.podman.compose.service={service}"]
        rows: list[dict[str, Any]] = json.loads(podman(*args, timeout=60).stdout or "[]")
        return sorted(rows, key=lambda r: str(r["Names"][0]))

    def container_name(self, service: str, index: int = 1) -> str:
        """Name of replica ``index`` (1-based) of ``service``."""
        names = [str(c["Names"][0]) for c in self.containers(service)]
        if len(names) < index:
            raise LookupError(f"{service} has {len(names)} container(s) in {self.project}")
        return names[index - 1]

    def exec(
        self,
        service: str,
        *cmd: str,
        index: int = 1,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float | None = 120,
    ) -> subprocess.CompletedProcess[str]:
        """``podman exec`` into replica ``index`` of ``service``."""
        return Container(self.container_name(service, index), "").exec(
            *cmd, user=user, env=env, check=check, timeout=timeout
        )

    def port(self, service: str, container_port: int, index: int = 1) -> int:
        """Host port that ``container_port`` of ``service`` is published on."""
        name = self.container_name(service, index)
        out = podman("port", name, f"{container_port}/tcp", timeout=60).stdout.split()
        return int(out[0].rsplit(":", 1)[1])

    def wait_healthy(self, *services: str, timeout: float = 120) -> float:
        """Run the health checks of ``services`` until all pass; return the seconds.

        A container without a health check counts as healthy once running.
        Fails fast, with the logs, if a container exits.
        """
        start = time.monotonic()
        pending = {c["Names"][0] for s in services for c in self.containers(s)}
        if not pending:
            raise LookupError(f"no containers for {services} in {self.project}")
        while pending:
            for name in sorted(pending):
                state = podman(
                    "inspect", "--format", "{{.State.Status}}", name, check=False, timeout=60
                ).stdout.strip()
                if state in ("exited", "stopped", "dead", ""):
                    raise ContainerError(
                        ["podman", "healthcheck", "run", name],
                        None,
                        Container(name, "").logs(),
                        "",
                        f"the container is {state or 'gone'}",
                    )
                proc = podman("healthcheck", "run", name, check=False, timeout=60)
                no_check = "no defined healthcheck" in (proc.stdout + proc.stderr).lower()
                if proc.returncode == 0 or (no_check and state == "running"):
                    pending.discard(name)
            if pending:
                if time.monotonic() - start > timeout:
                    logs = "\n".join(Container(n, "").logs()[-2000:] for n in pending)
                    raise TimeoutError(
                        f"not healthy within {timeout:.0f}s: {sorted(pending)}\n{logs}"
                    )
                time.sleep(1)
        return round(time.monotonic() - start, 2)


@contextlib.contextmanager
def compose_project(
    files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    project: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    in_pod: bool | None = None,
) -> Iterator[ComposeProject]:
    """Context manager around a :class:`ComposeProject`: ``down -v`` (and a
    label sweep) always runs at exit, even if ``up`` or the body failed.

    ``files``: the compose file(s); podman-compose runs in the first one's
    directory (relative ``build:`` / ``env_file:`` paths work). ``env`` is
    added to the environment podman-compose interpolates ``${VARS}`` from.
    ``project`` defaults to a fresh :func:`unique_name`. ``in_pod``: None
    keeps podman-compose's default (a pod ``pod_<project>`` without shared
    namespaces, so ``--scale`` works either way).
    """
    file_list = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    _compose_command()
    stack = ComposeProject(file_list, project, env=env, in_pod=in_pod)
    try:
        yield stack
    finally:
        stack.down()


# --------------------------------------------------------------------------
# Cleanup
# --------------------------------------------------------------------------


def cleanup_leftovers(prefix: str = DEFAULT_PREFIX, *, images: bool = True) -> dict[str, list[str]]:
    """Remove every container, pod, volume, network (and test image) whose
    name, or compose project, starts with ``prefix``. Returns what was removed.

    Stand-in images are never touched. Safe to call at session start/end.
    """
    if not prefix:
        raise ValueError("an empty prefix would remove everything")
    _require_podman()
    removed: dict[str, list[str]] = {
        "containers": [],
        "pods": [],
        "volumes": [],
        "networks": [],
        "images": [],
    }

    rows: list[dict[str, Any]] = json.loads(
        podman("ps", "-a", "--format", "json", check=False, timeout=60).stdout or "[]"
    )
    for row in rows:
        name = row["Names"][0]
        project = (row.get("Labels") or {}).get("io.podman.compose.project", "")
        if name.startswith(prefix) or project.startswith(prefix):
            removed["containers"].append(name)
    if removed["containers"]:
        podman(
            "rm",
            "--force",
            "--volumes",
            "--time",
            "0",
            *removed["containers"],
            check=False,
            timeout=300,
        )

    pods = podman("pod", "ps", "--format", "{{.Name}}", check=False, timeout=60).stdout.split()
    for pod in pods:
        if pod.startswith(prefix) or pod.startswith(f"pod_{prefix}"):
            podman("pod", "rm", "--force", pod, check=False, timeout=120)
            removed["pods"].append(pod)

    for kind in ("volume", "network"):
        names = podman(kind, "ls", "--format", "{{.Name}}", check=False, timeout=60).stdout.split()
        for n in names:
            if n.startswith(prefix):
                podman(kind, "rm", "--force", n, check=False, timeout=120)
                removed[kind + "s"].append(n)

    if images:
        refs = podman(
            "images", "--format", "{{.Repository}}:{{.Tag}}", check=False, timeout=60
        ).stdout.split()
        for ref in refs:
            repo = ref.split("/", 1)[-1] if ref.startswith("localhost/") else ref
            if repo.startswith(prefix):
                remove_image(ref)
                removed["images"].append(ref)
    if any(removed.values()):
        log.info("cleanup_leftovers(%r): %s", prefix, removed)
    return removed
