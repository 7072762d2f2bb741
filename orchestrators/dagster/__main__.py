"""``python -m orchestrators.dagster run|ui|lineage|up|down|status`` (what ``quartet`` calls)."""

from core.kit import adapter_main, exit_process

if __name__ == "__main__":
    exit_process(adapter_main(__package__))
