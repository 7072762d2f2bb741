"""``python -m orchestrators.temporal run|ui|lineage|up|down|status`` (``quartet ... temporal``)."""

import sys

from core.kit import adapter_main

sys.exit(adapter_main(__package__))
