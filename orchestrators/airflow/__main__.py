"""``python -m orchestrators.airflow run|ui|lineage|up|down|status``: Quartet on Airflow 3."""

from core.kit import adapter_main, exit_process
from orchestrators.airflow.harness import environment

exit_process(adapter_main(__package__, before=environment.configure))
