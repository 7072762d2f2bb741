"""``python -m core run [--as-of DATE] [--partition YYYY-MM]``: the bare run (same as ``quartet run bare``)."""

import sys

from core.cli import main
from core.kit import exit_process

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["run"] and (len(args) == 1 or args[1].startswith("-")):
        args = ["run", "bare", *args[1:]]
    exit_process(main(args))
