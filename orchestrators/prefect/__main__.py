"""``python -m orchestrators.prefect run|ui|lineage|up|down|status``: the kit's command line."""

import sys

from core.kit import adapter_main
from orchestrators.prefect import configure

sys.exit(adapter_main(__package__, before=configure))
