"""netlab - a tiny multi-host network on one Linux machine, for tests.

Every "host" is a Linux network namespace with one veth interface (``eth0``)
plugged into a Linux bridge.  The bridge lives in a dedicated *switch*
namespace, so the root namespace (the machine's real interfaces, routes and
firewall) is never modified.  Hosts have an address on a private subnet, a
loopback, and **no default route**: traffic to anything outside the lab subnet
fails with ``ENETUNREACH`` instead of leaking to the outside world.

Typical use (as root, Python 3.11, standard library only)::

    with Lab(prefix="tpl") as lab:
        app = lab.add_host("app1")
        lb = lab.add_host("lb")
        client = lab.add_host("client")
        app.popen(["python3", "-m", "http.server", "-b", app.address, "8000"])
        client.wait_for_port(app.address, 8000)
        print(client.http_get(app.address, 8000, "/").status)

The pytest process itself stays in the root namespace.  It talks to lab
hosts through :meth:`Host.call` / :meth:`Host.connect`, which run code on a
short-lived thread that has entered the host's namespace with ``setns(2)``
(via ctypes; ``os.setns`` only exists from Python 3.12).  A socket created
there stays in that namespace and can then be used from any thread, e.g. with
``http.client``, ``asyncio.open_connection(sock=...)`` or
``websockets...connect(uri, sock=...)``.  :meth:`Host.run_python` runs a
client script as a separate process inside a namespace instead.

Everything the lab creates (namespaces, veths, the bridge, processes) is
removed by :meth:`Lab.close` (also on exceptions, via the context manager).
:func:`cleanup_leftovers` removes what crashed earlier runs left behind.

Needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN) and iproute2; haproxy and
redis-server only for the helpers that start them.  A missing binary raises
:class:`MissingBinary` (a :class:`LabUnavailable`) carrying an install hint.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import http.client
import io
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "DEFAULT_PREFIX",
    "HAProxy",
    "Host",
    "HttpResult",
    "Lab",
    "LabError",
    "LabUnavailable",
    "MissingBinary",
    "NotPermitted",
    "Proc",
    "check_environment",
    "cleanup_leftovers",
    "haproxy_config",
    "pick_subnet",
    "require_binary",
    "run_in_netns",
    "subnet_conflicts",
]

T = TypeVar("T")

DEFAULT_PREFIX = "netlab"
#: Tried in order when no subnet is given (and ``NETLAB_SUBNET`` is unset).
SUBNET_CANDIDATES: tuple[str, ...] = (
    "10.213.47.0/24",
    "10.213.48.0/24",
    "172.30.213.0/24",
    "192.168.213.0/24",
)
#: Environment variable marking every process a lab starts (value: lab id).
ENV_MARKER = "NETLAB_LAB_ID"
NETNS_DIR = Path("/run/netns")
FIRST_HOST_OCTET = 10
_CLONE_NEWNET = 0x40000000
_SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"

INSTALL_HINTS: dict[str, str] = {
    "ip": "apt-get install -y iproute2",
    "haproxy": "apt-get install -y haproxy",
    "redis-server": "apt-get install -y redis-server",
    "redis-cli": "apt-get install -y redis-tools",
}

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_HOST_RE = re.compile(r"^[a-z][a-z0-9]{0,15}$")


# --------------------------------------------------------------------------
# errors


class LabUnavailable(RuntimeError):
    """This machine cannot run a lab. Tests: skip locally, fail in CI."""


class MissingBinary(LabUnavailable):
    """A required executable is not installed."""

    def __init__(self, binary: str, hint: str | None = None) -> None:
        self.binary = binary
        self.hint = hint or INSTALL_HINTS.get(binary, f"install {binary}")
        super().__init__(f"{binary!r} not found on PATH; install with: {self.hint}")


class NotPermitted(LabUnavailable):
    """Not root / no CAP_NET_ADMIN+CAP_SYS_ADMIN (network namespaces unusable)."""


class LabError(RuntimeError):
    """A lab operation failed (command error, timeout, address conflict...)."""


# --------------------------------------------------------------------------
# small helpers


def require_binary(name: str) -> str:
    """Return the absolute path of ``name`` or raise :class:`MissingBinary`.

    ``/usr/sbin`` and ``/sbin`` are searched too (``ip`` and ``haproxy``
    live there and are often missing from a non-login PATH).
    """
    path = os.environ.get("PATH", os.defpath) + os.pathsep + _SBIN_PATH
    found = shutil.which(name, path=path)
    if not found:
        raise MissingBinary(name)
    return found


def check_environment() -> None:
    """Raise :class:`LabUnavailable` unless namespaces can be created here."""
    require_binary("ip")
    if os.geteuid() != 0:
        raise NotPermitted("netlab needs root (network namespaces); run the suite as root")
    if not Path("/proc/self/ns/net").exists():
        raise LabUnavailable("kernel without network namespace support")


def _ip(*args: str, timeout: float = 10.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS`` and return the result; raise :class:`LabError` on failure."""
    cmd = [require_binary("ip"), *args]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timeout after {timeout}s: {' '.join(cmd)}") from exc
    if check and res.returncode != 0:
        msg = res.stderr.strip() or res.stdout.strip()
        if "Operation not permitted" in msg or "Permission denied" in msg:
            raise NotPermitted(f"{' '.join(cmd)}: {msg}")
        raise LabError(f"{' '.join(cmd)} failed ({res.returncode}): {msg}")
    return res


def _netns_names() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def _netns_pids(netns: str) -> list[int]:
    res = _ip("netns", "pids", netns, check=False)
    return [int(x) for x in res.stdout.split() if x.isdigit()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _procs_with_marker(value_prefix: str) -> list[int]:
    """PIDs whose environment has ``NETLAB_LAB_ID=<value_prefix>...``."""
    needle = f"{ENV_MARKER}={value_prefix}".encode()
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if any(item.startswith(needle) for item in env.split(b"\0")):
            found.append(int(entry))
    return found


def _sigkill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait_gone(pids_fn: Callable[[], list[int]], timeout: float) -> list[int]:
    """Poll ``pids_fn`` until it returns [] or ``timeout`` passes; return the rest."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.02) + 2):
        left = pids_fn()
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)
    return pids_fn()


# --------------------------------------------------------------------------
# subnet selection


def _root_networks() -> list[tuple[str, ipaddress.IPv4Network]]:
    """Addresses/routes/resolvers of the root namespace as (origin, network)."""
    nets: list[tuple[str, ipaddress.IPv4Network]] = []
    for item in json.loads(_ip("-j", "-4", "addr").stdout or "[]"):
        for a in item.get("addr_info", []):
            nets.append(
                (
                    f"addr {a['local']}/{a['prefixlen']} on {item['ifname']}",
                    ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False),
                )
            )
    for r in json.loads(_ip("-j", "-4", "route", "show", "table", "all").stdout or "[]"):
        dst = r.get("dst", "default")
        if dst == "default":
            continue  # the default route overlaps everything; hosts never use it
        with contextlib.suppress(ValueError):
            nets.append(
                (f"route {dst} dev {r.get('dev', '?')}", ipaddress.IPv4Network(dst, strict=False))
            )
    with contextlib.suppress(OSError):
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                with contextlib.suppress(ValueError):
                    nets.append((f"nameserver {parts[1]}", ipaddress.IPv4Network(parts[1])))
    return nets


def subnet_conflicts(subnet: str | ipaddress.IPv4Network) -> list[str]:
    """Describe everything in the root namespace that overlaps ``subnet``."""
    net = ipaddress.IPv4Network(subnet)
    return [origin for origin, other in _root_networks() if net.overlaps(other)]


def pick_subnet(subnet: str | None = None) -> ipaddress.IPv4Network:
    """Choose the lab subnet.

    ``subnet`` (or env ``NETLAB_SUBNET``) is validated: it must be private
    (RFC 1918), /16../29, and overlap nothing in the root namespace.  Without
    one, the first free entry of :data:`SUBNET_CANDIDATES` is returned.
    """
    wanted = subnet or os.environ.get("NETLAB_SUBNET")
    candidates = [wanted] if wanted else list(SUBNET_CANDIDATES)
    problems: list[str] = []
    for cand in candidates:
        net = ipaddress.IPv4Network(cand)
        rfc1918 = any(
            net.subnet_of(ipaddress.IPv4Network(p))
            for p in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
        )
        if not rfc1918 or not 16 <= net.prefixlen <= 29:
            problems.append(f"{net}: must be an RFC 1918 subnet between /16 and /29")
            continue
        conflicts = subnet_conflicts(net)
        if not conflicts:
            return net
        problems.append(f"{net} overlaps {', '.join(conflicts)}")
    raise LabError("no usable lab subnet: " + "; ".join(problems) + " (set NETLAB_SUBNET)")


# --------------------------------------------------------------------------
# setns on a dedicated thread

_libc = ctypes.CDLL(None, use_errno=True)


def _setns_current_thread(netns_path: str) -> None:
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns_path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_netns(
    netns: str, fn: Callable[..., T], *args: Any, timeout: float | None = 60.0, **kwargs: Any
) -> T:
    """Run ``fn(*args, **kwargs)`` on a new thread inside network namespace ``netns``.

    Only that thread switches namespace (``setns`` affects the calling thread);
    it exits afterwards, so the caller's namespace is never changed.  Sockets
    created by ``fn`` belong to ``netns`` for their whole life.  ``fn`` should
    use socket timeouts: a thread cannot be killed, so on ``timeout`` a
    :class:`TimeoutError` is raised and the (daemon) thread is abandoned.
    """
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            _setns_current_thread(str(NETNS_DIR / netns))
            result["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            result["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"function in netns {netns} still running after {timeout}s")
    if "error" in result:
        raise result["error"]
    value: T = result["value"]
    return value


#: sysctls forced in every lab namespace.  New namespaces inherit the root
#: namespace's IPv4 settings (net.core.devconf_inherit_init_net=0), which
#: other tenants may change (podman/netavark sets ip_forward=1).
NETNS_SYSCTLS: dict[str, str] = {"net/ipv4/ip_forward": "0"}


def _write_sysctls(values: Mapping[str, str]) -> None:
    # /proc/sys/net resolves against the *calling thread's* namespace.
    for key, value in values.items():
        Path("/proc/sys", key).write_text(value)


# --------------------------------------------------------------------------
# processes


class Proc:
    """A process started by :meth:`Host.popen`, leader of its own session.

    ``stop()`` sends SIGTERM to the whole process group, waits, then SIGKILLs
    the group; the leader is reaped last, so the group id cannot be recycled
    while we signal it.
    """

    def __init__(
        self,
        host: Host,
        args: Sequence[str],
        env: Mapping[str, str] | None,
        cwd: str | Path | None,
        log_path: Path,
    ) -> None:
        self.host = host
        self.args = list(args)
        self.env = dict(env or {})
        self.cwd = cwd
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env, ENV_MARKER: self.host.lab.id}
        cmd = [require_binary("ip"), "netns", "exec", self.host.netns, *self.args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- netlab: {' '.join(self.args)} (at {time.time():.3f})\n".encode())
            log.flush()
            return subprocess.Popen(
                cmd,
                env=env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def alive(self) -> bool:
        """True while the leader has not exited (does not reap it)."""
        if self.popen.returncode is not None:
            return False
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    def _wait_exit_nowait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.01) + 2):
            if not self.alive():
                return True
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        return not self.alive()

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the group, wait up to ``timeout``, SIGKILL the group, reap."""
        if self.popen.returncode is None:
            self._signal_group(signal.SIGTERM)
            if not self._wait_exit_nowait(timeout):
                self._signal_group(signal.SIGKILL)
                self._wait_exit_nowait(5.0)
            self._signal_group(signal.SIGKILL)  # leftovers of the group; leader still unreaped
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5.0)
        return self.popen.returncode

    def kill(self) -> int | None:
        """SIGKILL the whole group immediately (crash simulation) and reap."""
        return self.stop(timeout=0.0) if self.popen.returncode is None else self.popen.returncode

    def restart(self, timeout: float = 5.0) -> Proc:
        """Stop (if running) and start the same command again; returns self."""
        self.stop(timeout)
        self.popen = self._spawn()
        return self

    def log_text(self, tail: int = 4000) -> str:
        """The last ``tail`` characters of the combined stdout/stderr log."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-tail:]
        return ""

    def __repr__(self) -> str:
        return f"<Proc {self.args[0]} pid={self.pid} on {self.host.name} rc={self.returncode}>"


@dataclass(frozen=True)
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _NetnsHTTPConnection(http.client.HTTPConnection):
    def __init__(self, lab_host: Host, address: str, port: int, timeout: float) -> None:
        super().__init__(address, port, timeout=timeout)
        self._lab_host = lab_host
        self._connect_timeout = timeout

    def connect(self) -> None:
        self.sock = self._lab_host.connect(self.host, self.port, timeout=self._connect_timeout)


class Host:
    """One lab host: a network namespace with ``eth0`` on the lab bridge."""

    def __init__(self, lab: Lab, name: str, netns: str, address: str) -> None:
        self.lab = lab
        self.name = name
        self.netns = netns
        self.address = address
        self.procs: list[Proc] = []

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address} netns={self.netns}>"

    # --- processes -------------------------------------------------------

    def popen(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        log_path: str | Path | None = None,
    ) -> Proc:
        """Start a long-running process in this host (``ip netns exec``).

        ``env`` is added to the current environment.  stdout+stderr go to
        ``log_path`` (default ``<lab.workdir>/<host>-<argv0>-<n>.log``).  The
        process is stopped by :meth:`Lab.close` if still running.
        """
        if log_path is None:
            base = Path(args[0]).name
            log_path = self.lab.workdir / f"{self.name}-{base}-{len(self.procs)}.log"
        proc = Proc(self, args, env, cwd, Path(log_path))
        self.procs.append(proc)
        self.lab._procs.append(proc)
        return proc

    def run(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        timeout: float = 30.0,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command in this host; capture text output.

        On timeout the whole process group is killed and :class:`LabError`
        is raised; ``check=True`` raises on a non-zero exit status.
        """
        cmd = [require_binary("ip"), "netns", "exec", self.netns, *args]
        full_env = {**os.environ, **(env or {}), ENV_MARKER: self.lab.id}
        p = subprocess.Popen(
            cmd,
            env=full_env,
            cwd=cwd,
            text=True,
            start_new_session=True,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, err = p.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            raise LabError(f"[{self.name}] timeout after {timeout}s: {' '.join(args)}") from None
        res = subprocess.CompletedProcess(list(args), p.returncode, out, err)
        if check and p.returncode != 0:
            raise LabError(
                f"[{self.name}] {' '.join(args)} exited {p.returncode}: {err.strip()[-2000:]}"
            )
        return res

    def run_python(
        self,
        code: str,
        *args: str,
        python: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Any:
        """Run Python ``code`` as a separate process in this host; return the
        JSON value printed on its last non-empty stdout line."""
        res = self.run([python or sys.executable, "-c", code, *args], env=env, timeout=timeout)
        lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
        if not lines:
            raise LabError(
                f"[{self.name}] python client printed nothing; stderr: {res.stderr[-2000:]}"
            )
        return json.loads(lines[-1])

    # --- in-process access from the test (setns thread) -----------------

    def call(
        self, fn: Callable[..., T], *args: Any, timeout: float | None = 60.0, **kwargs: Any
    ) -> T:
        """Run ``fn`` in this host's network namespace (see :func:`run_in_netns`)."""
        return run_in_netns(self.netns, fn, *args, timeout=timeout, **kwargs)

    def set_link(self, up: bool) -> None:
        """Plug ``eth0`` in or out: while it is out, packets to and from this host are lost
        without a word, as when a client's network drops."""
        _ip("-n", self.netns, "link", "set", "eth0", "up" if up else "down")

    def connect(self, address: str, port: int, timeout: float = 5.0) -> socket.socket:
        """A TCP socket connected *from this host*; usable from any thread."""
        # create_connection's own timeout is passed positionally: ``timeout=``
        # is the keyword of run_in_netns (thread join bound).
        return run_in_netns(
            self.netns, socket.create_connection, (address, port), timeout, timeout=timeout + 1.0
        )

    def http_connection(
        self, address: str, port: int, timeout: float = 5.0
    ) -> http.client.HTTPConnection:
        """An ``http.client.HTTPConnection`` whose socket is opened from this host."""
        return _NetnsHTTPConnection(self, address, port, timeout)

    def http_get(
        self,
        address: str,
        port: int,
        path: str = "/",
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> HttpResult:
        """One HTTP GET from this host (new connection, ``Connection: close``)."""
        conn = self.http_connection(address, port, timeout)
        try:
            conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
            resp = conn.getresponse()
            return HttpResult(
                resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
            )
        finally:
            conn.close()

    def wait_for_port(
        self, address: str, port: int, timeout: float = 10.0, proc: Proc | None = None
    ) -> float:
        """Wait until a TCP connect from this host to ``address:port`` succeeds.

        Returns the seconds waited.  Fails fast (with the log tail) if
        ``proc`` exits meanwhile; raises :class:`TimeoutError` otherwise.
        """
        start = time.monotonic()
        deadline = start + timeout
        last: Exception | None = None
        for _ in range(int(timeout / 0.05) + 2):
            if proc is not None and not proc.alive():
                raise LabError(
                    f"[{self.name}] {proc} exited while waiting for {address}:{port}:\n{proc.log_text()}"
                )
            try:
                self.connect(
                    address, port, timeout=max(0.2, min(1.0, deadline - time.monotonic()))
                ).close()
                return time.monotonic() - start
            except OSError as exc:
                last = exc
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        raise TimeoutError(f"[{self.name}] {address}:{port} not reachable after {timeout}s: {last}")


# --------------------------------------------------------------------------
# the lab


class Lab:
    """A bridge in its own "switch" namespace plus hosts attached to it.

    ``prefix`` (lowercase alnum, <= 12 chars) starts every namespace name:
    ``<prefix>-<owner pid>-<4 hex>-<host>``; the switch is ``...-sw``.
    ``subnet``: see :func:`pick_subnet`.  ``workdir`` holds configs and
    logs; if not given a temporary one is created and removed on a clean
    close (kept, and mentioned in the exception notes, after a failure).
    """

    SWITCH = "sw"
    BRIDGE = "br0"

    def __init__(
        self,
        prefix: str = DEFAULT_PREFIX,
        subnet: str | None = None,
        workdir: str | Path | None = None,
    ) -> None:
        if not _PREFIX_RE.match(prefix):
            raise ValueError(f"prefix must match {_PREFIX_RE.pattern}: {prefix!r}")
        self.prefix = prefix
        self.id = f"{prefix}-{os.getpid()}-{secrets.token_hex(2)}"
        self._subnet_arg = subnet
        self.subnet: ipaddress.IPv4Network | None = None
        self.switch_netns = f"{self.id}-{self.SWITCH}"
        self.hosts: dict[str, Host] = {}
        self._procs: list[Proc] = []
        self._namespaces: list[str] = []
        self._own_workdir = workdir is None
        self._workdir_arg = workdir
        self.workdir = Path(workdir) if workdir else Path(tempfile.gettempdir()) / f"{self.id}-work"
        self.timings: dict[str, float] = {}
        self._started = False
        self._closed = False

    # --- lifecycle ---------------------------------------------------------

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.close(keep_workdir=exc is not None)
        if exc is not None and self.workdir.exists():
            exc.add_note(f"netlab: logs of lab {self.id} kept in {self.workdir}")

    def start(self) -> Lab:
        """Create the switch namespace and its bridge."""
        t0 = time.perf_counter()
        check_environment()
        self.subnet = pick_subnet(self._subnet_arg)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._started = True
        try:
            self._add_netns(self.switch_netns)
            self._batch(
                self.switch_netns,
                [
                    f"link add {self.BRIDGE} type bridge stp_state 0 forward_delay 0",
                    f"link set {self.BRIDGE} up",
                    "link set lo up",
                ],
            )
        except BaseException:
            self.close()
            raise
        self.timings["start"] = time.perf_counter() - t0
        return self

    def _add_netns(self, name: str) -> None:
        self._namespaces.append(name)  # register first: close() removes partial work
        _ip("netns", "add", name)
        run_in_netns(name, _write_sysctls, NETNS_SYSCTLS, timeout=5.0)

    @staticmethod
    def _batch(netns: str, commands: list[str]) -> None:
        cmd = [require_binary("ip"), "-n", netns, "-batch", "-"]
        res = subprocess.run(
            cmd,
            input="\n".join(commands) + "\n",
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if res.returncode != 0:
            raise LabError(
                f"ip -n {netns} -batch failed: {res.stderr.strip()} (commands: {commands})"
            )

    def add_host(self, name: str, address: str | None = None) -> Host:
        """Create host ``name``: namespace, veth to the bridge, address, lo up.

        ``address`` defaults to the next free one from ``.10`` upwards.
        """
        if not self._started or self._closed:
            raise LabError("lab is not running (use it as a context manager)")
        if not _HOST_RE.match(name) or name == self.SWITCH:
            raise ValueError(f"host name must match {_HOST_RE.pattern} and not be 'sw': {name!r}")
        if name in self.hosts:
            raise ValueError(f"host {name!r} already exists in lab {self.id}")
        assert self.subnet is not None
        used = {h.address for h in self.hosts.values()}
        if address is None:
            pool = (
                str(self.subnet.network_address + i)
                for i in range(FIRST_HOST_OCTET, self.subnet.num_addresses - 1)
            )
            address = next((a for a in pool if a not in used), None)
            if address is None:
                raise LabError(f"subnet {self.subnet} is full")
        elif ipaddress.IPv4Address(address) not in self.subnet or address in used:
            raise ValueError(f"address {address} not in {self.subnet} or already used")

        t0 = time.perf_counter()
        netns = f"{self.id}-{name}"
        port = f"v{len(self.hosts) + 1}-{name}"[:15]
        self._add_netns(netns)
        _ip(
            "link",
            "add",
            "eth0",
            "netns",
            netns,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            self.switch_netns,
        )
        self._batch(
            netns,
            [
                "link set lo up",
                f"addr add {address}/{self.subnet.prefixlen} dev eth0",
                "link set eth0 up",
            ],
        )
        self._batch(
            self.switch_netns, [f"link set {port} master {self.BRIDGE}", f"link set {port} up"]
        )
        host = Host(self, name, netns, address)
        self.hosts[name] = host
        self.timings[f"add_host:{name}"] = time.perf_counter() - t0
        return host

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def close(self, keep_workdir: bool = False) -> None:
        """Stop processes, delete namespaces (veths and bridge go with them).

        Idempotent; collects errors and raises one :class:`LabError` at the end
        if something could not be removed.
        """
        if self._closed:
            return
        self._closed = True
        t0 = time.perf_counter()
        errors: list[str] = []
        # 1. polite stop of all processes in parallel: SIGTERM every group first
        running = [p for p in self._procs if p.returncode is None]
        for p in running:
            p._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for p in running:
            p._wait_exit_nowait(max(0.0, deadline - time.monotonic()))
        for p in running:
            try:
                p.stop(timeout=0.0)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"stop {p}: {exc}")
        # 2. anything else still inside our namespaces or carrying our marker
        ours = [n for n in self._namespaces if (NETNS_DIR / n).exists()]

        def leftovers() -> list[int]:
            pids = {pid for n in ours for pid in _netns_pids(n)}
            pids.update(_procs_with_marker(self.id))
            return sorted(pids)

        pids = leftovers()
        if pids:
            _sigkill_all(pids)
            pids = _wait_gone(leftovers, 5.0)
            if pids:
                errors.append(f"processes survived SIGKILL: {pids}")
        # 3. namespaces: hosts first, switch last
        for n in reversed(ours):
            res = _ip("netns", "del", n, check=False)
            if res.returncode != 0:
                errors.append(f"ip netns del {n}: {res.stderr.strip()}")
        left = [n for n in _netns_names() if n.startswith(self.id + "-")]
        if left:
            errors.append(f"namespaces left: {left}")
        # 4. workdir
        if self._own_workdir and not keep_workdir and not errors:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.timings["close"] = time.perf_counter() - t0
        if errors:
            raise LabError(f"lab {self.id} cleanup incomplete: " + "; ".join(errors))


# --------------------------------------------------------------------------
# leftovers of crashed runs


def cleanup_leftovers(prefix: str = DEFAULT_PREFIX, include_live: bool = False) -> list[str]:
    """Remove namespaces, processes and workdirs of earlier labs named ``prefix``.

    A lab whose owner process (pid in its id) is still alive is skipped unless
    ``include_live`` - so this is safe at the start of parallel test
    sessions.  Returns a description of what was removed.
    """
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"prefix must match {_PREFIX_RE.pattern}: {prefix!r}")
    lab_re = re.compile(rf"^({re.escape(prefix)}-(\d+)-[0-9a-f]{{4}})-")
    removed: list[str] = []

    def is_dead(owner: int) -> bool:
        return include_live or (owner != os.getpid() and not _pid_alive(owner))

    # processes first (by namespace membership and by environment marker)
    labs: dict[str, list[str]] = {}
    for n in _netns_names():
        m = lab_re.match(n)
        if m and is_dead(int(m.group(2))):
            labs.setdefault(m.group(1), []).append(n)
    marker_labs: dict[str, list[int]] = {}
    for pid in _procs_with_marker(prefix + "-"):
        with contextlib.suppress(OSError):
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            value = next(e for e in env if e.startswith(f"{ENV_MARKER}=".encode())).split(b"=", 1)[
                1
            ]
            m = lab_re.match(value.decode() + "-")
            if m and is_dead(int(m.group(2))):
                marker_labs.setdefault(m.group(1), []).append(pid)
    pids = sorted(
        {p for ns_list in labs.values() for n in ns_list for p in _netns_pids(n)}
        | {p for ps in marker_labs.values() for p in ps}
    )
    if pids:
        _sigkill_all(pids)
        _wait_gone(lambda: [p for p in pids if _running(p)], 5.0)
        removed.append(f"killed pids {pids}")
    for ns_list in labs.values():
        for n in sorted(ns_list, key=lambda x: x.endswith("-sw")):
            if _ip("netns", "del", n, check=False).returncode == 0:
                removed.append(f"netns {n}")
    tmp = Path(tempfile.gettempdir())
    for d in tmp.glob(f"{prefix}-*-work"):
        m = lab_re.match(d.name)
        if m and d.is_dir() and is_dead(int(m.group(2))):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(f"workdir {d}")
    return removed


# --------------------------------------------------------------------------
# HAProxy


def haproxy_config(
    *,
    bind: str,
    port: int,
    servers: Mapping[str, tuple[str, int]],
    admin_socket: str | Path,
    check_host: str = "localhost",
    check_path: str = "/readyz",
    balance: str = "roundrobin",
    check_inter_ms: int = 500,
    fall: int = 2,
    rise: int = 2,
    timeout_connect: str = "2s",
    timeout_client: str = "30s",
    timeout_server: str = "30s",
    timeout_tunnel: str = "1h",
    retry_on: str = "conn-failure",
    frontend: str = "http_in",
    backend: str = "app",
) -> str:
    """HAProxy config: HTTP frontend on ``bind:port`` -> ``backend`` of ``servers``.

    Health check ``GET check_path`` with ``Host: check_host`` expecting 200;
    no stickiness; WebSocket friendly timeouts; ``option forwardfor``;
    ``option redispatch`` + ``retries`` so a refused connection is retried on
    another server; admin-level runtime socket at ``admin_socket``.
    ``retry_on`` (HAProxy ``retry-on``): the default only retries failed
    connects; ``"conn-failure empty-response"`` also retries a request whose
    server closed the connection without answering (an app shutting down
    drops connections it had accepted but not served -> otherwise 502).  Any
    L7 retry is disabled for non-GET/HEAD requests (not replay-safe).  No
    ``chroot``/``user``/``daemon``: it runs in the foreground, as root, in
    the lab namespace.
    """
    if balance not in ("roundrobin", "leastconn"):
        raise ValueError("balance must be roundrobin or leastconn")
    fastinter = max(50, check_inter_ms // 2)
    timing = f"inter {check_inter_ms}ms fastinter {fastinter}ms downinter {check_inter_ms}ms"
    l7_retry = (
        "\n    http-request disable-l7-retry if !METH_GET"
        if retry_on.split() not in (["conn-failure"], ["none"])
        else ""
    )
    server_lines = "\n".join(f"    server {n} {a}:{p}" for n, (a, p) in servers.items())
    return f"""\
global
    log stdout format raw local0 info
    stats socket {admin_socket} mode 600 level admin
    stats timeout 30s
    maxconn 4096

defaults
    mode http
    log global
    option httplog
    option dontlognull
    option forwardfor
    option redispatch 1
    retries 3
    retry-on {retry_on}
    timeout connect {timeout_connect}
    timeout client {timeout_client}
    timeout server {timeout_server}
    timeout tunnel {timeout_tunnel}
    timeout client-fin 5s
    timeout http-request 10s
    timeout check 1s

frontend {frontend}
    bind {bind}:{port}{l7_retry}
    default_backend {backend}

backend {backend}
    balance {balance}
    option httpchk
    http-check send meth GET uri {check_path} ver HTTP/1.1 hdr Host {check_host}
    http-check expect status 200
    default-server check {timing} fall {fall} rise {rise}
{server_lines}
"""


class HAProxy:
    """A running haproxy on a lab host plus its runtime (admin) socket."""

    def __init__(
        self, host: Host, port: int, config_path: Path, admin_socket: Path, proc: Proc, backend: str
    ) -> None:
        self.host = host
        self.port = port
        self.config_path = config_path
        self.admin_socket = admin_socket
        self.proc = proc
        self.backend = backend

    @classmethod
    def start(
        cls,
        host: Host,
        servers: Mapping[str, tuple[str, int]],
        port: int = 80,
        timeout: float = 10.0,
        **config: Any,
    ) -> HAProxy:
        """Write a config (:func:`haproxy_config`), validate it and run haproxy
        in the foreground on ``host``, bound to ``host.address:port``."""
        binary = require_binary("haproxy")
        workdir = host.lab.workdir
        admin = workdir / f"{host.name}-haproxy-{port}.sock"
        cfg = workdir / f"{host.name}-haproxy-{port}.cfg"
        cfg.write_text(
            haproxy_config(
                bind=host.address, port=port, servers=servers, admin_socket=admin, **config
            )
        )
        host.run([binary, "-c", "-q", "-f", str(cfg)], timeout=timeout)
        proc = host.popen(
            [binary, "-db", "-f", str(cfg)], log_path=workdir / f"{host.name}-haproxy-{port}.log"
        )
        self = cls(host, port, cfg, admin, proc, config.get("backend", "app"))
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 2):
            if not proc.alive():
                raise LabError(f"haproxy exited at start:\n{proc.log_text()}")
            with contextlib.suppress(OSError):
                self.command("show info")
                break
            if time.monotonic() >= deadline:
                proc.stop()
                raise LabError(
                    f"haproxy admin socket not ready after {timeout}s:\n{proc.log_text()}"
                )
            time.sleep(0.05)
        return self

    @property
    def address(self) -> str:
        return self.host.address

    def command(self, cmd: str, timeout: float = 3.0) -> str:
        """Send one runtime-API command on the admin socket; return the reply.

        (A unix socket path is not network-namespaced: this works from the
        root namespace.)
        """
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.admin_socket))
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            for _ in range(10_000):
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode()

    def stat_rows(self) -> list[dict[str, str]]:
        """``show stat`` as a list of dicts (CSV columns: pxname, svname, status...)."""
        text = self.command("show stat")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines or not lines[0].startswith("# "):
            raise LabError(f"unexpected 'show stat' reply: {text[:200]!r}")
        lines[0] = lines[0][2:]
        return list(csv.DictReader(io.StringIO("\n".join(lines))))

    def server_states(self, backend: str | None = None) -> dict[str, str]:
        """``{server: "UP" | "DOWN" | "MAINT" | "DRAIN" | raw}``.

        Transitional states are reduced to the current state: ``UP 1/2``
        (one failed check) is UP, ``DOWN 1/2`` is DOWN.
        """
        backend = backend or self.backend
        out: dict[str, str] = {}
        for row in self.stat_rows():
            if row["pxname"] != backend or row["svname"] in ("FRONTEND", "BACKEND"):
                continue
            status = row["status"]
            out[row["svname"]] = (
                status.split()[0] if status.split()[0] in ("UP", "DOWN") else status
            )
        return out

    def wait_until_backends(
        self,
        state: str,
        names: Iterable[str],
        timeout: float = 10.0,
        backend: str | None = None,
        poll: float = 0.05,
    ) -> float:
        """Wait until every server in ``names`` has ``state`` (e.g. "UP"/"DOWN").

        Returns the seconds waited; raises :class:`TimeoutError` with the
        current states.
        """
        names = list(names)
        start = time.monotonic()
        deadline = start + timeout
        states: dict[str, str] = {}
        for _ in range(int(timeout / poll) + 2):
            states = self.server_states(backend)
            if all(states.get(n) == state for n in names):
                return time.monotonic() - start
            if time.monotonic() >= deadline:
                break
            time.sleep(poll)
        raise TimeoutError(f"backends {names} not all {state} after {timeout}s: {states}")

    def set_server_state(self, server: str, state: str, backend: str | None = None) -> str:
        """Runtime ``set server <backend>/<server> state ready|drain|maint``."""
        if state not in ("ready", "drain", "maint"):
            raise ValueError("state must be ready, drain or maint")
        return self.command(f"set server {backend or self.backend}/{server} state {state}")

    def stop(self, timeout: float = 5.0) -> int | None:
        return self.proc.stop(timeout)
