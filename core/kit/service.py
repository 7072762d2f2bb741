"""Managed services: processes Quartet starts, waits for, and stops with everything they started.

A :class:`Service` is one long-running process (an orchestrator's webserver, scheduler, worker,
the Temporal dev server...) started in its own process group with its output in a log file. It is
ready when its check answers (a URL that returns 2xx/3xx, or any callable); every error names the
service and its log. Stopping sends SIGTERM to the whole group, waits, then SIGKILL: nothing it
started survives it.

A :class:`Topology` is the set of services of one orchestrator's deployed mode. ``up`` starts
the services that are not running and returns when all are healthy; its state (pid, process
start time, URL, log) is kept in ``.quartet/<name>/services.json`` so that ``down`` and
``status`` in another process find them. A recorded pid is only ever signalled when the process
with that pid is still the one that was started (same start time), never a recycled pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core import settings
from core.failures import ServiceError

Check = Callable[[], bool]


def url_answers(url: str, timeout: float = 5.0) -> bool:
    """True when ``url`` answers with a status below 500 (a 401/404 still means it is up)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


def wait_until(
    check: Check,
    *,
    what: str,
    timeout: float,
    interval: float = 0.25,
    alive: Callable[[], str | None] | None = None,
) -> float:
    """Poll ``check`` until it is true; return the seconds it took.

    ``alive`` returns a reason when whatever is being waited for has died (then waiting stops at
    once instead of running out the clock). Raises :class:`ServiceError` naming ``what``.
    """
    started = time.monotonic()
    while True:
        with contextlib.suppress(Exception):
            if check():
                return time.monotonic() - started
        if alive is not None and (reason := alive()):
            raise ServiceError(f"{what}: {reason}")
        if time.monotonic() - started > timeout:
            raise ServiceError(f"{what}: not ready within {timeout:.0f}s")
        time.sleep(interval)


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has finished; only its exit status is left
        return None
    return int(fields[19])


def group_alive(pgid: int) -> bool:
    """True while a process of the group has not exited. A zombie has exited: only its parent's
    wait is left (a service whose starter has exited is reaped by PID 1 when it gets to it)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_group(pgid: int, *, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
    """Signal a whole process group, wait for it to go, then SIGKILL whatever is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _reaped_alive(pgid):
        time.sleep(0.05)
    if _reaped_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        while _reaped_alive(pgid) and time.monotonic() < deadline + 5:
            time.sleep(0.05)


def _reaped_alive(pgid: int) -> bool:
    """Reap our own child (the group's leader, when we started it), then: is any of the group
    still running?"""
    _reap(pgid)
    return group_alive(pgid)


def _reap(pid: int) -> None:
    """Collect the exit status of our own child so that it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


@dataclass
class Service:
    """One process of a topology: how to start it and how to tell it is ready."""

    name: str
    argv: Sequence[str]
    log: Path
    ready: str | Check | None = None  # a URL, a callable, or None (ready once running)
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path = settings.REPO_ROOT
    url: str | None = None  # what to print for a person (defaults to ``ready`` when a URL)
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 20.0
    pid: int | None = None
    started_at: int | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> Service:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            log.write(f"\n--- {time.strftime('%F %T')} starting: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                start_new_session=True,  # its own process group: stop() takes all it started
            )
        self.pid = self.process.pid
        self.started_at = process_start_time(self.pid)
        return self

    def running(self) -> bool:
        if self.pid is None:
            return False
        if self.process is not None:
            return self.process.poll() is None
        return self.started_at is not None and process_start_time(self.pid) == self.started_at

    def exit_reason(self) -> str | None:
        if self.running():
            return None
        code = self.process.returncode if self.process is not None else None
        return f"exited{f' with code {code}' if code is not None else ''}; see {self.log}"

    def is_ready(self) -> bool:
        if isinstance(self.ready, str):
            return url_answers(self.ready)
        if callable(self.ready):
            return bool(self.ready())
        return self.running()

    def wait_ready(self, timeout: float) -> float:
        return wait_until(
            self.is_ready,
            what=f"service {self.name} (log: {self.log})",
            timeout=timeout,
            alive=self.exit_reason,
        )

    def stop(self) -> None:
        """Stop the service and everything it started (its process group)."""
        if self.pid is not None and (self.process is not None or self.running()):
            stop_group(self.pid, timeout=self.stop_timeout, sig=self.stop_signal)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
        self.pid = None

    def display_url(self) -> str | None:
        return self.url or (self.ready if isinstance(self.ready, str) else None)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "pid": self.pid,
            "started_at": self.started_at,
            "log": str(self.log),
            "url": self.display_url(),
        }

    @contextlib.contextmanager
    def running_context(self, timeout: float) -> Iterator[Service]:
        """Start, wait until ready, yield, and always stop (a service for one command's life)."""
        self.start()
        try:
            self.wait_ready(timeout)
            yield self
        finally:
            self.stop()


class Topology:
    """The services of one orchestrator's deployed mode, recorded across processes."""

    def __init__(self, name: str, services: Sequence[Service]) -> None:
        self.name = name
        self.services = list(services)
        self.state_file = settings.orchestrator_dir(name) / "services.json"

    def _recorded(self) -> dict[str, dict]:
        try:
            return {s["name"]: s for s in json.loads(self.state_file.read_text())["services"]}
        except (OSError, ValueError, KeyError):
            return {}

    def _record(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        running = [s.to_json() for s in self.services if s.pid is not None]
        self.state_file.write_text(json.dumps({"services": running}, indent=2))

    def _adopt(self) -> None:
        """Take over the pids a previous ``up`` recorded, where those processes still run."""
        recorded = self._recorded()
        for service in self.services:
            entry = recorded.get(service.name)
            if entry and service.pid is None:
                service.pid, service.started_at = entry["pid"], entry["started_at"]
                if not service.running():
                    service.pid = service.started_at = None

    def up(self, timeout: float, *, log: Callable[[str], None] = print) -> dict[str, float]:
        """Start what is not running, in order; return when every service is ready.

        Returns the seconds each service took to become ready. On a failure, the services this
        call started are stopped again and the error names the service and its log.
        """
        self._adopt()
        started: list[Service] = []
        seconds: dict[str, float] = {}
        t0 = time.monotonic()
        if all(service.running() for service in self.services):
            log(f"[{self.name}] already up (`quartet down {self.name}` stops it):")
        try:
            for service in self.services:
                if not service.running():
                    log(
                        f"[{self.name}] starting {service.name} (log: {settings.shown_path(service.log)})"
                    )
                    started.append(service.start())
                    self._record()
                seconds[service.name] = service.wait_ready(timeout)
        except BaseException:
            for service in reversed(started):
                service.stop()
            self._record()
            raise
        self._record()
        for service in self.services:
            where = f"  {service.display_url()}" if service.display_url() else ""
            how = "started" if service in started else "running"
            log(f"[{self.name}] {service.name:16s} {how:8s} pid {service.pid:<8d}{where}")
        if started:
            log(f"[{self.name}] healthy in {time.monotonic() - t0:.1f}s")
        return seconds

    def down(self, *, log: Callable[[str], None] = print) -> list[str]:
        """Stop every recorded service (reverse order); returns the names stopped."""
        self._adopt()
        stopped = []
        if not any(service.running() for service in self.services):
            log(f"[{self.name}] not up: nothing to stop")
        for service in reversed(self.services):
            if service.running():
                log(f"[{self.name}] stopping {service.name} (pid {service.pid})")
                t0 = time.monotonic()
                service.stop()
                stopped.append(service.name)
                log(f"[{self.name}] stopped {service.name} in {time.monotonic() - t0:.1f}s")
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        return stopped

    def status(self) -> dict[str, dict]:
        """Per service: running (the recorded process is alive), ready (its check answers)."""
        self._adopt()
        return {
            s.name: {**s.to_json(), "running": s.running(), "ready": s.running() and s.is_ready()}
            for s in self.services
        }

    def service(self, name: str) -> Service:
        self._adopt()
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(f"{self.name} has no service {name!r}")
