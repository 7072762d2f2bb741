"""How a Quartet process ends: one clean stop on Ctrl-C or SIGTERM, a parent that waits for its
child's, and an exit that skips the interpreter's teardown.

Every Quartet command stops the same way on Ctrl-C (SIGINT) or SIGTERM: the signal becomes a
``KeyboardInterrupt``, every ``with`` block unwinds, and each service, server or source API the
command started is stopped by the block that started it.

Two things can break that, and this module closes both:

* A second signal arriving while the first one's cleanup runs raises inside the cleanup and
  leaves services running. ``kill -TERM -<group>`` after a Ctrl-C, or a launcher that signals
  both a parent and its child, does exactly that. So only the first signal interrupts; later
  ones are ignored (:func:`stop_on_signals`).
* ``quartet`` runs each orchestrator's command as a child process (its own environment).
  ``subprocess.call`` answers an interrupt by waiting a quarter of a second and then killing
  the child with SIGKILL: the child dies in the middle of its cleanup and its servers (each in
  its own process group) outlive it. :func:`call` passes the stop on to the child instead and
  waits until the child has stopped everything it started.

Once a command's work is done, :func:`exit_process` ends the process without the interpreter's
teardown (see there why).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

EXIT_INTERRUPTED = 130  # the shell's code for "ended by SIGINT"


def _interrupt_once(signum: int, frame) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):  # the cleanup this starts must not be cut short
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def stop_on_signals() -> None:
    """The first SIGINT or SIGTERM raises ``KeyboardInterrupt``; later ones are ignored.

    SIGINT is installed even when the launcher ignored it (a non-interactive shell does for
    background jobs, and Python then installs no handler): a UI must stop on Ctrl-C anywhere.
    """
    signal.signal(signal.SIGINT, _interrupt_once)
    signal.signal(signal.SIGTERM, _interrupt_once)


def call(argv: Sequence[str], *, cwd: Path | None = None, what: str = "") -> int:
    """Run a child in this process group and return its exit code.

    On an interrupt the child is told to stop (SIGTERM; a child that already got the signal
    through the group ignores the repeat) and waited for, however long its cleanup takes.
    """
    child = subprocess.Popen(list(argv), cwd=cwd)
    try:
        return child.wait()
    except KeyboardInterrupt:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            print(
                f"quartet: waiting for {what or argv[0]} (PID {child.pid}) to stop what it started",
                file=sys.stderr,
                flush=True,
            )
        child.wait()
        raise


def exit_process(code: int) -> NoReturn:
    """End this process with ``code`` once its work is done: exit handlers run, the interpreter's
    teardown does not.

    The teardown's last garbage collection walks every object the imports made, a noticeable
    share of a bare run with dbt, dlt, pyarrow and DuckDB loaded (ADR 0020, docs/benchmarks.md),
    and with them loaded DuckDB's extension module may report its types as "leaked" while Python
    frees them on the way out. Nothing is lost by skipping it: every resource of a command is
    released by its own ``with`` block before this point, and the exit handlers libraries
    registered (logging's flush, dlt's telemetry, dbt-duckdb's connections, weakref finalizers
    such as temporary directories) still run here, in their usual order.

    Temporal's SDK needs the same for another reason: its Rust core keeps its own (Tokio)
    threads, which can still call into Python while the interpreter finalizes, and CPython then
    aborts ("PyGILState_Release: thread state ... must be current") after a run that succeeded.
    """
    atexit._run_exitfuncs()  # what a normal exit runs first (logging.shutdown among them)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed (a broken pipe): nothing to flush
            stream.flush()
    os._exit(code)
