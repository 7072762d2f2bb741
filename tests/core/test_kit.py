"""The adapter kit on its own: command line, managed services, policy, dbt failure report, order."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from core import kit, lineage, settings
from core.dbt import NodeResult, failure_report
from core.ingestion import ConfigError, load_config
from core.kit.service import process_start_time
from tests.core import fake_adapter

PACKAGE = "tests.core.fake_adapter"


@pytest.fixture(autouse=True)
def _home(quartet_home):
    fake_adapter.CALLS.clear()


# -- the command line ---------------------------------------------------------------------------


def test_run_gets_one_validated_request():
    code = kit.adapter_main(
        PACKAGE,
        [
            "run",
            "--as-of",
            "2013-1-31".replace("-1-", "-01-"),
            "--partition",
            "2013-03",
            "--partition",
            "2013-01",
        ],
    )
    assert code == 0
    ((verb, request),) = fake_adapter.CALLS
    assert verb == "run"
    assert request == kit.RunRequest(
        name="fake_adapter", as_of="2013-01-31", partitions=("2013-03", "2013-01")
    )
    assert request.label == "2013-03, 2013-01, as of 2013-01-31"


@pytest.mark.parametrize(
    ("flags", "culprit"),
    [
        (["--partition", "2013-13"], "2013-13"),
        (["--partition", "2012-12"], "outside the configured range"),
        (["--partition", "2013-02", "--partition", "2013-02"], "given twice"),
        (["--as-of", "yesterday"], "--as-of must be a date"),
    ],
)
def test_bad_flags_exit_2_naming_the_culprit(flags, culprit, capsys):
    assert kit.adapter_main(PACKAGE, ["run", *flags]) == kit.EXIT_USAGE
    assert culprit in capsys.readouterr().err
    assert fake_adapter.CALLS == []  # the adapter never ran


def test_a_failed_run_exits_1_with_its_message_and_no_traceback(capsys):
    assert kit.adapter_main(PACKAGE, ["run", "--as-of", "2013-02-28"]) == kit.EXIT_FAILED
    err = capsys.readouterr().err
    assert (
        "quartet run fake_adapter failed: ingest flights: the source API refused the token" in err
    )
    assert "Traceback" not in err


def test_lineage_prints_the_declared_graph(capsys):
    assert kit.adapter_main(PACKAGE, ["lineage", "--json"]) == 0
    assert '"raw.flights"' in capsys.readouterr().out


def test_missing_deploy_module_is_a_clear_usage_error(capsys):
    assert kit.adapter_main(PACKAGE, ["up"]) == kit.EXIT_USAGE
    assert "fake_adapter has no deployed mode yet" in capsys.readouterr().err


# -- policy numbers -----------------------------------------------------------------------------


def test_policy_comes_from_the_config_file(tmp_path, monkeypatch):
    text = Path(load_config().path).read_text().replace("unit_retries = 2", "unit_retries = 4")
    path = tmp_path / "ingestion.toml"
    path.write_text(text)
    policy = load_config(path).orchestration
    assert policy.unit_retries == 4
    assert policy.retry_delays() == [
        min(policy.retry_delay_seconds * policy.retry_backoff**i, policy.max_retry_delay_seconds)
        for i in range(4)
    ]
    path.write_text(text.replace('schedule = "0 0 1 * *"', 'schedule = "monthly"'))
    with pytest.raises(ConfigError, match="schedule must be a 5-field cron"):
        load_config(path)
    path.write_text(text.replace("heartbeat_seconds = 30", "heartbeat_seconds = -1"))
    with pytest.raises(ConfigError, match=r"\[orchestration\] heartbeat_seconds must be positive"):
        load_config(path)


# -- the dbt failure report and graph order -----------------------------------------------------


def test_failure_report_names_what_broke_and_what_it_skipped():
    report = failure_report(
        [
            NodeResult("test.q.not_null_x", "not_null_x", "test", "fail", 0.1, "Got 3 results"),
            NodeResult("model.q.fct", "fct", "model", "skipped", 0.0),
        ]
    )
    assert report == (
        "dbt build failed:\n  test not_null_x: fail - Got 3 results\n"
        "  skipped downstream (left as they were): fct"
    )


def test_graph_order_puts_parents_first_and_refuses_cycles():
    graph = lineage.Graph(
        nodes=dict.fromkeys("dcba", "x"), edges={("b", "a"), ("c", "a"), ("d", "c")}
    )
    assert graph.order() == ["b", "d", "c", "a"]
    graph.edges.add(("a", "d"))
    with pytest.raises(ValueError, match="cycle"):
        graph.order()


# -- managed services ---------------------------------------------------------------------------


def _http_service(name: str, tmp_path: Path, port: int) -> kit.Service:
    # a child that starts a grandchild: stopping the service must take both
    code = (
        "import subprocess, sys, http.server;"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
        f"http.server.ThreadingHTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()"
    )
    return kit.Service(
        name,
        [sys.executable, "-c", code],
        log=tmp_path / f"{name}.log",
        ready=f"http://127.0.0.1:{port}/",
        cwd=tmp_path,
    )


def _children(pid: int) -> list[int]:
    """The processes of group ``pid`` that still run (an exited one waiting for its reaper, a
    zombie, runs no more)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def test_topology_up_status_down_across_processes(tmp_path):
    from core.net import free_port

    port = free_port()
    topology = kit.Topology("fake_adapter", [_http_service("web", tmp_path, port)])
    seconds = topology.up(timeout=30, log=lambda _: None)
    assert set(seconds) == {"web"}
    pid = topology.service("web").pid
    assert len(_children(pid)) == 2  # the server and its grandchild, one process group

    # what `quartet status` / `up` / `down` see from another process: the recorded state
    again = kit.Topology("fake_adapter", [_http_service("web", tmp_path, port)])
    assert again.status()["web"]["ready"] is True
    again.up(timeout=30, log=lambda _: None)  # up twice is harmless: same process
    assert again.service("web").pid == pid
    assert again.down(log=lambda _: None) == ["web"]
    assert _children(pid) == []
    assert process_start_time(pid) is None
    assert kit.Topology("fake_adapter", [_http_service("web", tmp_path, port)]).status()["web"] == {
        "name": "web",
        "pid": None,
        "started_at": None,
        "log": str(tmp_path / "web.log"),
        "url": f"http://127.0.0.1:{port}/",
        "running": False,
        "ready": False,
    }


def test_a_service_that_dies_fails_at_once_naming_itself_and_its_log(tmp_path):
    service = kit.Service(
        "broken",
        [sys.executable, "-c", "import sys; print('bad config'); sys.exit(3)"],
        log=tmp_path / "broken.log",
        ready="http://127.0.0.1:9/",
    )
    started = time.monotonic()
    with pytest.raises(kit.ServiceError) as error:
        kit.Topology("fake_adapter", [service]).up(timeout=60, log=lambda _: None)
    assert time.monotonic() - started < 30  # not the whole timeout: it noticed the exit
    assert "service broken" in str(error.value) and str(tmp_path / "broken.log") in str(error.value)
    assert "exited with code 3" in str(error.value)
    assert "bad config" in (tmp_path / "broken.log").read_text()


def test_a_recycled_pid_is_never_signalled(tmp_path):
    topology = kit.Topology(
        "fake_adapter", [kit.Service("ghost", ["true"], log=tmp_path / "g.log")]
    )
    topology.state_file.parent.mkdir(parents=True, exist_ok=True)
    # a record that names this very test process, with another start time: not ours
    record = {"name": "ghost", "pid": os.getpid(), "started_at": 1, "log": "", "url": None}
    topology.state_file.write_text(json.dumps({"services": [record]}))
    assert topology.down(log=lambda _: None) == []
    assert process_start_time(os.getpid()) is not None


def test_wait_until_names_what_it_waited_for():
    with pytest.raises(kit.ServiceError, match="the moon: not ready within 0s"):
        kit.wait_until(lambda: False, what="the moon", timeout=0.2, interval=0.05)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        assert kit.url_answers(f"http://127.0.0.1:{sock.getsockname()[1]}/") is False


# -- stopping on Ctrl-C and SIGTERM -------------------------------------------------------------

#: a server that takes two seconds to stop on SIGTERM (and says when its handler is in place)
_SLOW_TO_STOP = (
    "import signal, time; signal.signal(signal.SIGTERM, lambda *_: (time.sleep(2), exit(0)));"
    " print('handler', 'set', flush=True); time.sleep(600)"
)

_CHILD = f"""
import sys, time
from pathlib import Path
from core import kit
from core.kit.signals import stop_on_signals

stop_on_signals()
log = Path(sys.argv[1])
service = kit.Service(
    "slow", [sys.executable, "-c", {_SLOW_TO_STOP!r}], log=log,
    ready=lambda: "handler set" in log.read_text(),
)
try:
    with service.running_context(timeout=30):
        print("service", service.pid, flush=True)
        time.sleep(600)
except KeyboardInterrupt:
    print("stopped what it started", flush=True)
    sys.exit(130)
"""

_PARENT = """
import sys
from core.kit import signals

signals.stop_on_signals()
try:
    sys.exit(signals.call([sys.executable, "-c", sys.argv[1], sys.argv[2]], what="the child"))
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.parametrize("first", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_waits_for_the_child_to_stop_its_services(first, tmp_path):
    """`quartet ui` used to SIGKILL the adapter 0.25 s into its cleanup, orphaning its servers."""
    import signal
    import subprocess

    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, _CHILD, str(tmp_path / "slow.log")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=settings.REPO_ROOT,
        start_new_session=True,  # a group of its own, as a terminal gives a command
    )
    words = parent.stdout.readline().split()
    assert words[:1] == ["service"], parent.communicate(timeout=60)
    service_pid = int(words[1])
    os.killpg(parent.pid, getattr(signal, first))  # what Ctrl-C (or `kill -TERM -PGID`) does
    time.sleep(0.5)
    os.killpg(parent.pid, signal.SIGTERM)  # a second signal during the cleanup changes nothing
    out, err = parent.communicate(timeout=60)
    assert parent.returncode == 130, err
    assert "stopped what it started" in out
    assert process_start_time(service_pid) is None  # stopped by its starter, not orphaned
    assert "waiting for the child" in err and "Traceback" not in err


def test_bench_deployed_times_the_first_unit_from_the_followers_own_lines():
    """`quartet bench deployed` reads when the first unit started from the progress line the
    follower prints as the unit ends: the line's time minus the unit's own seconds."""
    from core.kit import progress
    from lab.bench_deployed import first_unit_latency

    lines = [
        (101.0, "[temporal] submitted workflow quartet-full"),
        (117.5, progress.unit_line("temporal", "ingest", "flights", 12.5, "+27,692 rows")),
        (130.0, progress.unit_line("temporal", "dbt", "stg_flights", 2.0)),
    ]
    assert first_unit_latency("temporal", lines, submitted=100.0) == 5.0
    assert first_unit_latency("dagster", lines, submitted=100.0) is None
