"""``python -m tests.leftovers``: fail when a process started from this checkout is still running.

`make test` ends with it: every server, worker and source API a test started must have been
stopped by the fixture that started it. A process counts as this checkout's when its command
line names the checkout (its .venvs interpreters, its modules run by path); this process and
its ancestors (make, the shell) are left out.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from core import settings


def ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def leftovers(root: Path = settings.REPO_ROOT) -> list[tuple[int, str]]:
    mine = ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        command = " ".join(a.decode(errors="replace") for a in argv if a)
        if str(root) in command:
            found.append((int(entry.name), command[:200]))
    return sorted(found)


def main() -> int:
    found = leftovers()
    for pid, command in found:
        print(f"left running: pid {pid}: {command}", file=sys.stderr)
    if found:
        print(
            f"{len(found)} process(es) of {settings.REPO_ROOT} outlived the test suite",
            file=sys.stderr,
        )
        return 1
    print("no process left behind")
    return 0


if __name__ == "__main__":
    sys.exit(main())
