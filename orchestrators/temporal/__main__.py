"""``python -m orchestrators.temporal run|ui|lineage|up|down|status`` (``quartet ... temporal``)."""

from core.kit import adapter_main, exit_process

exit_process(adapter_main(__package__))
