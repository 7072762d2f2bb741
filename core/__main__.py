"""``python -m core run [--as-of DATE] [--partition YYYY-MM ...]``: the bare run."""

from core.bare import main
from core.kit import exit_process
from core.kit.signals import stop_on_signals

if __name__ == "__main__":
    stop_on_signals()  # SIGTERM unwinds like Ctrl-C: the source API child stops too
    exit_process(main())
