"""``python -m orchestrators.airflow run|ui|lineage|up|down|status``: Quartet on Airflow 3."""

import sys

from core.kit import adapter_main
from orchestrators.airflow import environment

sys.exit(adapter_main(__package__, before=environment.configure))
