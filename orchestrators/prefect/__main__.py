"""``python -m orchestrators.prefect run|ui|lineage|up|down|status``: the kit's command line.

The command ends without the interpreter's teardown (``exit_process``, as every adapter's does):
in it, with Prefect's, dlt's and dbt's imports in one process, DuckDB's extension module may
report its type objects as "leaked" while Python frees them on the way out.
"""

from core.kit import adapter_main, exit_process
from orchestrators.prefect import configure

exit_process(adapter_main(__package__, before=configure))
