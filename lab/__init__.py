"""What proves and measures the pipeline and its four orchestrations: the ``quartet`` command
line, fingerprints and comparisons, benchmarks, the reliability matrix, timelines, generated
docs, and the PostgreSQL provider. It imports core (the pipeline and the kit); core never
imports it, and neither does the code a user of an orchestrator writes.
"""
