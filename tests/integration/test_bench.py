"""The perf harness as a user runs it (``python -m bench ...``): a tiny run of every workload against rafka_shards
checks the CSV, the summary and the plots; bad input fails fast with a message; Ctrl-C leaves nothing behind.
Full runs (and the peers) are not part of CI; no assertion here is about speed."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench import workload
from bench.runner import COLUMNS, percentiles

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
PARTITIONS_MAX = 16
TINY = [
    "--duration-s",
    "3",  # long enough for a first acknowledgement on a busy 2-core machine (1.5 s sometimes saw none)
    "--warmup-s",
    "0.3",
    "--messages-max",
    "4000",
    "--partitions-max",
    str(PARTITIONS_MAX),
    "--data-mb",
    "2",
    "--keys",
    "100",  # compaction: 2 MiB of values over 100 keys, so the cleaner has values to drop
    "--no-progress",
]


def _bench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        return list(reader)


# Run by test_throughput_and_latency_over_sasl_ssl_against_plaintext_in_one_run, with the same checks on their rows.
IN_THE_LISTENER_TEST = ("throughput-1kb", "latency-10k")


@pytest.mark.parametrize("name", [n for n in workload.available() if n not in IN_THE_LISTENER_TEST])
def test_a_tiny_run_of_every_workload_writes_sane_rows_a_summary_and_plots(name: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    w = workload.load(name)
    # A workload of several shard counts runs rafka_shards only: a peer named with it is skipped with the reason.
    brokers = "rafka,redis" if len(w.shards) > 1 else "rafka"
    result = _bench("run", name, "--brokers", brokers, "--out", str(out), *TINY)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _rows(out)
    if len(w.shards) > 1:
        assert [r["shards"] for r in rows] == [str(n) for n in w.shards]
        assert f"skipped redis: {name} varies rafka_shards' shard count" in result.stderr
    assert (out / "summary.md").read_text().startswith("# Benchmark run")
    if w.kind == "limits":
        assert [r["broker"] for r in rows] == ["machine"] * 3
        assert all(float(r["achieved_mb_s"] or r["achieved_msgs_s"]) > 0 for r in rows)
        return
    if w.kind == "groups":
        _check_groups_rows(rows)
        return
    # Steps the partition cap makes identical run once (many-partitions: 1 and 16 partitions).
    distinct = {(s.shards, min(s.partitions, PARTITIONS_MAX), s.rate) for s in w.steps()}
    assert len(rows) == len(distinct) * (2 if w.kind == "compaction" else 1)
    for row in rows:
        assert row["broker"] == "rafka" and row["workload"] == name and row["listener"] == "PLAINTEXT"
        _check_measured_row(row)
        if w.kind == "recovery":
            assert float(row["recovery_s"]) > 0 and "all readable after SIGKILL" in row["note"]
        elif w.kind == "compaction":
            _check_compaction_row(row)
        else:
            _check_stream_row(row)
    _check_plots(out, name, rows)


def _check_measured_row(row: dict[str, str]) -> None:
    """What every measured row of a Kafka broker has: acknowledgements, resources, ordered ack percentiles."""
    assert row["git_commit"] and row["errors"] == "0", row["note"]
    assert int(row["messages_acked"]) > 0 and float(row["achieved_msgs_s"]) > 0
    assert float(row["broker_cpu_s"]) > 0 and float(row["broker_peak_rss_mb"]) > 0
    assert float(row["client_cpu_s"]) > 0
    produce = [float(row[f"produce_{p}_us"]) for p in ("p50", "p95", "p99", "max")]
    assert produce == sorted(produce) and produce[0] > 0


def _check_stream_row(row: dict[str, str]) -> None:
    """A stream step: everything acknowledged was read back, with ordered end-to-end percentiles."""
    assert row["messages_consumed"] == row["messages_acked"]
    e2e = [float(row[f"e2e_{p}_us"]) for p in ("p50", "p95", "p99", "max")]
    assert e2e == sorted(e2e) and e2e[0] > 0
    if row["target_rate"] != "0":
        assert float(row["target_attainment_pct"]) > 0


def _check_plots(out: Path, name: str, rows: list[dict[str, str]]) -> None:
    plots = sorted(out.glob("*.png"))
    assert plots and all(p.read_bytes().startswith(b"\x89PNG") for p in plots)
    assert (out / f"{name}-throughput.png") in plots
    if any(r["target_rate"] != "0" for r in rows if r["workload"] == name):
        assert (out / f"{name}-latency.png") in plots


def _check_groups_rows(rows: list[dict[str, str]]) -> None:
    """Manual assignment and the group's steady window have end-to-end latencies (the group's also commit
    latencies); the kill and join rows the seconds until every partition was read again."""
    endings = ["manual assignment", "group, steady", "group, member killed", "group, member joined"]
    assert len(rows) == len(endings) and all(r["step"].endswith(e) for r, e in zip(rows, endings, strict=True))
    for row in rows:
        assert row["errors"] == "0", row
    for row in rows[:2]:
        e2e = [float(row[f"e2e_{p}_us"]) for p in ("p50", "p95", "p99", "max")]
        assert e2e == sorted(e2e) and e2e[0] > 0 and int(row["messages_consumed"]) > 0
    assert 0 < float(rows[1]["commit_p50_us"]) <= float(rows[1]["commit_p99_us"])
    assert float(rows[2]["rebalance_s"]) > 0 and float(rows[3]["rebalance_s"]) > 0


def _check_compaction_row(row: dict[str, str]) -> None:
    """The baseline row has the size the cleaner starts from; the cleaning row what the cleaner did to it."""
    assert row["consumers"] == "0" and row["messages_consumed"] == ""
    assert float(row["size_before_mb"]) > 0
    if row["step"].endswith("cleaner off"):
        assert "filled 2,048 of 2,048 keyed messages" in row["note"], row["note"]
        assert row["cleaner_read_mb_s"] == ""
        return
    assert row["step"].endswith("cleaner on")
    assert float(row["cleaner_read_mb_s"]) > 0 and float(row["cleaner_s"]) > 0
    assert float(row["size_after_mb"]) < float(row["size_before_mb"]), row["note"]  # 100 keys: most values go
    assert float(row["produce_p99_ratio"]) > 0 and "1 pass(es) read" in row["note"]


def test_a_compaction_run_skips_the_peers_and_a_bootstrap_broker(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--brokers", "redis,tansu", "--bootstrap", "127.0.0.1:9", "--out", str(out), *TINY]
    result = _bench("run", "compaction", *args, timeout=60)
    assert result.returncode == 1 and "no broker could run" in result.stderr, result.stderr
    assert "skipped redis: compaction measures rafka_shards' log cleaner" in result.stderr
    assert "skipped tansu: compaction measures rafka_shards' log cleaner" in result.stderr
    assert "skipped --bootstrap 127.0.0.1:9: compaction restarts the broker" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no-such-workload"], "unknown workload 'no-such-workload'"),
        (["run", "throughput-1kb", "--brokers", "rafka,kafkaesque"], "--brokers: unknown kafkaesque"),
        (["run", "throughput-1kb", "--duration-s", "-1"], "--duration-s: expected"),
        (["run", "throughput-1kb", "--duration-s", "2", "--warmup-s", "5"], "warm-up (5.0 s) must be shorter"),
    ],
)
def test_bad_usage_exits_2_with_a_message(args: list[str], message: str) -> None:
    result = _bench(*args, timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('name = "x"\nrates = [-5]\n', "rates: expected an integer 0..10000000, got -5"),
        ('name = "x"\npartitions = 0\n', "partitions: expected an integer 1..100000, got 0"),
        ('name = "x"\npartitons = 8\n', "unknown field(s) partitons"),
        ('name = "x"\nacks = "most"\n', "acks: expected one of 0, 1, all"),
        ('name = "x"\nmessage_size = "big"\n', "message_size: expected an integer"),
        ("name = \n", "Invalid value"),
    ],
)
def test_a_bad_workload_file_exits_2_naming_the_field(body: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    result = _bench("run", str(path), timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_an_unreachable_broker_exits_1_at_once(tmp_path: Path) -> None:
    with socket_bound() as port:  # bound, not listening: connections are refused
        started = time.monotonic()
        result = _bench(
            "run", "throughput-1kb", "--brokers", "", "--bootstrap", f"127.0.0.1:{port}", "--out", str(tmp_path)
        )
    assert result.returncode == 1 and f"cannot reach 127.0.0.1:{port}" in result.stderr, result.stderr
    assert time.monotonic() - started < 60


def test_help_explains_every_option_and_list_every_workload() -> None:
    result = _bench("run", "--help", timeout=60)
    assert result.returncode == 0
    flags = ("--brokers", "--bootstrap", "--out", "--duration-s", "--warmup-s", "--messages-max", "--data-mb", "--keys")
    for flag in flags:
        assert flag in result.stdout
    listing = _bench("list", timeout=60)
    for name in workload.available():
        assert f"{name} " in listing.stdout and workload.load(name).description in listing.stdout


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_the_run_and_leaves_no_process_or_directory(tmp_path: Path) -> None:
    before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    inherited = signal.getsignal(signal.SIGINT)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench",
            "run",
            "latency-10k",
            "--brokers",
            "rafka",
            "--duration-s",
            "60",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a terminal delivers it: the run must not inherit an ignored SIGINT from the test process (an
        # ignored SIGINT stays ignored across exec, and Python then installs no KeyboardInterrupt handler).
        preexec_fn=_default_sigint,
    )
    root = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    tree: list[psutil.Process] = []
    while time.monotonic() < deadline:  # until the broker and the client processes run
        tree = root.children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in tree if p.is_running())
        # the broker's shard (processes of a node are named) and the bench's producer and consumer
        if "rafka_shards: node 1 shard 0 " in names and names.count("multiprocessing.spawn") >= 2:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the run did not start its broker and clients")
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, f"SIGINT here: {inherited}\nstdout: {out[-3000:]}\nstderr: {err[-3000:]}"
    assert "interrupted" in err
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert alive == [], f"left running: {[p.pid for p in alive]}"
    left = {n for n in set(os.listdir(os.environ.get("TMPDIR", "/tmp"))) - before if n.startswith("rafka-bench-")}
    assert left == set()


def test_percentiles_are_nearest_rank() -> None:
    import array

    values = array.array("Q", range(1, 101))
    assert percentiles(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    empty = percentiles(array.array("Q"))
    assert all(v != v for v in empty.values())  # NaN: no sample


class socket_bound:
    """A loopback port that is bound but not listening, for the test's lifetime."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        port: int = self.sock.getsockname()[1]
        return port

    def __exit__(self, *_: object) -> None:
        self.sock.close()


def test_a_failed_step_still_gets_its_row_summary_and_plots(tmp_path: Path) -> None:
    """A step that failed (say, a topic the broker would not create) has only its load columns and a note: the
    report writes it as it is instead of crashing on the missing measurements."""
    from bench import report

    rows: list[dict[str, object]] = [
        {
            "broker": "rafka",
            "workload": "w",
            "step": "ok",
            "achieved_mb_s": 5.0,
            "target_rate": 100,
            "e2e_p50_us": 1,
            "e2e_p95_us": 2,
            "e2e_p99_us": 3,
        },
        {"broker": "rafka", "workload": "w", "step": "failed", "target_rate": 100, "errors": 1, "note": "refused"},
    ]
    report.write_csv(tmp_path / "results.csv", rows)
    assert [r["note"] for r in _rows(tmp_path)] == ["", "refused"]
    assert "| rafka | failed |" in report.summary(rows, [], "test")
    assert [p.name for p in report.plots(rows, tmp_path)] == ["w-throughput.png", "w-latency.png"]


def test_throughput_and_latency_over_sasl_ssl_against_plaintext_in_one_run(tmp_path: Path) -> None:
    """Issue 18's comparison at a tiny size: both workloads in one run, each against rafka_shards' PLAINTEXT listener
    and against a SASL_SSL one (SCRAM-SHA-512, a certificate made for the run); the CSV says which listener each row
    measured, and the run prints and writes the secured / plaintext ratios. No assertion is about speed."""
    out = tmp_path / "out"
    args = ["--brokers", "rafka,rafka-sasl-ssl", "--out", str(out), *TINY]
    result = _bench("run", "throughput-1kb", "latency-10k", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _rows(out)
    measured = [(r["workload"], r["broker"], r["listener"]) for r in rows]
    assert measured == [
        ("throughput-1kb", "rafka", "PLAINTEXT"),
        ("throughput-1kb", "rafka-sasl-ssl", "SASL_SSL"),
        ("latency-10k", "rafka", "PLAINTEXT"),
        ("latency-10k", "rafka-sasl-ssl", "SASL_SSL"),
    ]
    for row in rows:
        _check_measured_row(row)
        _check_stream_row(row)
        assert float(row["achieved_mb_s"]) > 0
    _check_plots(out, "throughput-1kb", rows)
    _check_plots(out, "latency-10k", rows)
    assert "secured listener against PLAINTEXT" in result.stdout
    for workload_name in ("throughput-1kb", "latency-10k"):
        line = next(x for x in result.stdout.splitlines() if x.startswith(f"| {workload_name} |") and "acked MB/s" in x)
        assert float(line.rstrip(" |").rsplit("|", 1)[1]) > 0  # the ratio, whatever it is
    summary = (out / "summary.md").read_text()
    assert "## Secured listener against PLAINTEXT (rafka_shards)" in summary
    assert "password" not in result.stdout + result.stderr + summary  # the run's SCRAM password stays in the run
    assert not list(out.glob("**/*.key"))  # keys only in the run's temporary directory, removed with it


def test_the_listener_comparison_sets_each_secured_step_against_its_plaintext_one() -> None:
    """Ratios secured / PLAINTEXT per workload and step, latencies in whole µs; rows without a PLAINTEXT twin, of
    another broker, or that failed are not compared."""
    from bench import report

    def row(broker: str, listener: str, step: str, errors: int = 0) -> dict[str, object]:
        return {"broker": broker, "listener": listener, "workload": "w", "step": step, "errors": errors}

    rows = [
        {**row("rafka", "PLAINTEXT", "a"), "achieved_mb_s": 10.0, "e2e_p99_us": 1000.4},
        {**row("rafka-sasl-ssl", "SASL_SSL", "a"), "achieved_mb_s": 7.5, "e2e_p99_us": 2000.0},
        {**row("rafka-sasl-ssl", "SASL_SSL", "b"), "achieved_mb_s": 1.0},  # no PLAINTEXT row for b
        {**row("tansu", "PLAINTEXT", "a"), "achieved_mb_s": 99.0},
        {**row("rafka", "PLAINTEXT", "c"), "achieved_mb_s": 5.0},
        {**row("rafka-sasl-ssl", "SASL_SSL", "c", errors=1), "achieved_mb_s": 0.1},
    ]
    assert report.listener_comparison(rows)[2:] == [
        "| w | a | SASL_SSL | acked MB/s | 10.0 | 7.5 | 0.75 |",
        "| w | a | SASL_SSL | e2e p99 us | 1,000 | 2,000 | 2.00 |",
    ]
    assert report.listener_comparison(rows[3:]) == []
