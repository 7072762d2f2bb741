"""``python -m orchestrators.dagster run|ui|lineage|up|down|status`` (what ``quartet`` calls)."""

import sys

from core.kit import adapter_main

if __name__ == "__main__":
    sys.exit(adapter_main(__package__))
