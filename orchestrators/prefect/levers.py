"""Speed levers: every place the Prefect adapter departs from Prefect's stock idiom to go faster.

Each lever is one function or constant here, used in one line by the file it speeds up.
QUARTET_STOCK=1 (``core.settings.stock()``) turns all of them off: what is left is the stock
idiom (``PrefectDbtRunner`` through its public settings only, as prefect's
``examples/model_level_dbt_orchestration.py`` uses it; Prefect's own server and worker
defaults), which runs and passes the same tests, only slower. Each docstring says what the lever
does, why, and the gain measured for it with the command that measured it (ADR 0008 and ADR 0015
record the decisions).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from core import settings

#: how long the transformation flow waits, after ``dbt build`` returned, for the dbt nodes' task
#: runs to report their final state (each has only its last API calls left by then)
NODE_TASK_RUNS_GRACE_SECONDS = 30
#: the deployed worker's poll for scheduled flow runs (Prefect's default: 10)
WORKER_QUERY_SECONDS = 1


def on() -> bool:
    """Whether the levers are on (QUARTET_STOCK unset or 0)."""
    return not settings.stock()


# -- dev-mode runs (run.py) -----------------------------------------------------------------------


def ephemeral_server_without_block_catalog() -> None:
    """The ephemeral API server of a dev run registers no block types at start-up.

    What: sets ``PREFECT_SERVER_REGISTER_BLOCKS_ON_START=false`` and
    ``PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION=false`` (unless the user set them) before
    Prefect is imported; the server process inherits them.
    Why: by default the server imports every installed collection at start-up (prefect-dbt, and
    with it dbt) to register their block types, or to find them registered. A dev run's server
    is never browsed; the one block a run uses, the Secret, registers its type when
    ``provision`` saves it. ``quartet ui prefect`` keeps the default, so its UI lists them all.
    Gain: ephemeral server start to healthy 3.80-3.99 s -> 2.69-2.87 s
    (``SubprocessASGIServer().start()`` in a fresh process, alternated; the first setting alone
    gains nothing).
    Stock: Prefect's defaults.
    """
    if not on():
        return
    os.environ.setdefault("PREFECT_SERVER_REGISTER_BLOCKS_ON_START", "false")
    os.environ.setdefault("PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION", "false")


# -- the dbt build (flows.transformation) ---------------------------------------------------------


def seed_dbt_parse(target_dir: Path) -> None:
    """Start the pipeline's dbt target dir from the prepared partial parse.

    What: copies the ``partial_parse.msgpack`` of the manifest core prepared into the target dir
    before ``dbt build`` (``core.dbt.seed_partial_parse``).
    Why: a new target dir (a fresh home, the PostgreSQL profile's own dir) makes dbt parse the
    project from scratch inside the build.
    Gain: not measured on its own (a full parse is part of the dbt phase's figures, ADR 0008).
    Stock: dbt parses as it finds the target dir.
    """
    if not on():
        return
    from core import dbt

    dbt.seed_partial_parse(target_dir)


@contextlib.contextmanager
def node_task_runs_share_flow_context() -> Iterator[None]:
    """Run prefect-dbt's per-node task runs on the flow run's settings and API client.

    What: for the build's duration, replaces two names prefect-dbt imported from Prefect
    (``prefect_dbt.core.runner.serialize_context``, ``prefect_dbt.core._tracker
    .hydrated_context``): the serialized context leaves out the settings when they are the
    process's global ones, so each node thread falls back to that very object; each node thread
    starts with the flow thread's ``SyncClientContext``, so every ``get_client(sync_client=True)``
    in it returns the flow run's client (httpx clients are thread-safe; Prefect's own
    ``ThreadPoolTaskRunner`` shares them the same way). The node threads are joined before the
    block ends, so no node's task run outlives the client it uses. Outside a flow run: nothing.
    Why: prefect-dbt 0.7 runs each dbt node's task run on a thread of its own that rebuilds
    Prefect's context from a serialized copy: two ``Settings`` objects and three API clients
    (each loading certifi's CA bundle) per node, while dbt's thread waits for the GIL. Still one
    task run per node, with the same states, logs, assets and upstream edges.
    Gain: dbt build 11.1-13.0 s -> 5.1-6.4 s of a full-year run ("Running with dbt" to "Done."
    in ``.quartet/prefect/logs/run.log`` of ``.venvs/prefect/bin/python -m orchestrators.prefect
    run``, alternated); with the block-catalog lever, ``quartet bench prefect --repeat 1`` 35.4 ->
    28.5 s of wall and 33.7 -> 25.2 CPU s (means of four).
    Stock: prefect-dbt's node threads as they come. A definitions test fails when a prefect-dbt
    upgrade renames or stops calling the two names.
    """
    from prefect.context import GLOBAL_SETTINGS_CONTEXT, SettingsContext, SyncClientContext
    from prefect_dbt.core import _tracker as dbt_node_tracker
    from prefect_dbt.core import runner as dbt_runner

    flow_clients = SyncClientContext.get()
    if not on() or flow_clients is None:  # stock, or not in a flow run: prefect-dbt's own way
        yield
        return
    node_threads: list[threading.Thread] = []
    serialize_context = dbt_runner.serialize_context
    hydrated_context = dbt_node_tracker.hydrated_context

    def serialize_without_global_settings(*args, **kwargs):
        serialized = serialize_context(*args, **kwargs)
        if SettingsContext.get() is GLOBAL_SETTINGS_CONTEXT:
            serialized["settings_context"] = {}
        return serialized

    @contextlib.contextmanager
    def hydrated_with_flow_client(serialized):
        node_threads.append(threading.current_thread())
        SyncClientContext.__var__.set(flow_clients)  # this thread's own context, new and empty
        with hydrated_context(serialized, client=flow_clients.client):
            yield

    dbt_runner.serialize_context = serialize_without_global_settings
    dbt_node_tracker.hydrated_context = hydrated_with_flow_client
    try:
        yield
    finally:
        dbt_runner.serialize_context = serialize_context
        dbt_node_tracker.hydrated_context = hydrated_context
        deadline = time.monotonic() + NODE_TASK_RUNS_GRACE_SECONDS
        for thread in list(node_threads):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))


# -- deployed mode (deploy.py, docker/prefect/compose.yaml) ---------------------------------------


def worker_env() -> dict[str, str]:
    """The deployed worker asks the server for scheduled runs every second.

    What: ``PREFECT_WORKER_QUERY_SECONDS=1`` in the worker's environment (and in
    docker/prefect/compose.yaml).
    Why: a submitted run waits for the worker's next poll before its process starts: half of
    Prefect's 10 s on average.
    Gain: submission to the worker taking the run 6.2-6.5 s -> 0.99-1.00 s (the flow run's
    records and the worker's log, a fresh ``quartet up prefect`` and ``quartet run prefect
    --deployed`` per arm, alternated); its price, idle: 2.71 -> 5.62 CPU s over 120 s of the
    server's and worker's process trees (``/proc`` times).
    Stock: Prefect's 10 s.
    """
    return {"PREFECT_WORKER_QUERY_SECONDS": str(WORKER_QUERY_SECONDS)} if on() else {}
