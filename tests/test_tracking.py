"""MLflow store set-up: two commands starting at once on a brand-new sqlite store, one killed while it
creates it; where artifacts live; values logged once."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_two_processes_creating_one_new_sqlite_store_both_get_the_experiment(tmp_path):
    # All would run the store's schema migrations at the same moment; unserialized, one of them failed
    # ("No such index ...") when two fidelity seeds started side by side, or all left it broken.
    code = (
        f"from lp_ray.tracking.tracker import Tracker; "
        f"print('experiment', Tracker('sqlite:///{tmp_path}/mlflow.db', 'race', 'h').experiment_id)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert [rc for _, _, rc in results] == [0, 0, 0], [err[-500:] for _, err, _ in results]
    ids = {out.strip().splitlines()[-1] for out, _, _ in results}
    assert len(ids) == 1 and ids.pop().startswith("experiment ")


def test_a_command_killed_while_creating_a_new_sqlite_store_leaves_none_behind(tmp_path):
    # MLflow makes a new store's schema with dozens of migrations whose DDL SQLite commits one by one: the
    # chaos run's driver, killed among them, left a store that every later command refused ("table
    # _alembic_tmp_trace_tags already exists"). Killed while the schema is being made, mid-way:
    from lp_ray.tracking.tracker import Tracker

    store = tmp_path / "mlflow.db"
    code = f"from lp_ray.tracking.tracker import Tracker; Tracker('sqlite:///{store}', 'killed', 'h')"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while (
        time.time() < deadline
        and proc.poll() is None
        and not any(p.name != "mlflow.db.lock" for p in tmp_path.iterdir())
    ):
        time.sleep(0.005)
    time.sleep(0.1)  # the schema is being made (~1-3 s here)
    assert proc.poll() is None, "the store was made before it could be killed: " + proc.stderr.read()[-500:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not store.exists()  # no half-made store
    tracker = Tracker(f"sqlite:///{store}", "lp-ray/tiny", "h")  # the next command makes it whole
    assert tracker.client.get_experiment_by_name("lp-ray/tiny").experiment_id == tracker.experiment_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlflow.db.lock"]


def test_artifacts_of_a_sqlite_store_live_beside_it(tmp_path, monkeypatch):
    # MLflow's default would put them in ./mlruns of whatever directory the command runs in.
    from lp_ray.tracking.tracker import Tracker

    store, elsewhere = tmp_path / "store", tmp_path / "cwd"
    store.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    tracker = Tracker(f"sqlite:///{store / 'mlflow.db'}", "lp-ray/tiny", "h")
    run_id = tracker.start("a run", {"lp_ray.kind": "imp"})
    tracker.log_files(run_id, {"note.txt": b"hello"}, "report")
    exp = tracker.client.get_experiment(tracker.experiment_id)
    assert exp.artifact_location == (store / "mlartifacts" / "lp-ray" / "tiny").as_uri()
    path = store / "mlartifacts" / "lp-ray" / "tiny" / run_id / "artifacts" / "report" / "note.txt"
    assert path.read_text() == "hello"
    assert list(elsewhere.iterdir()) == []  # no mlruns/ here


def test_values_are_logged_once_and_without_float_noise(tmp_path):
    """A value logged again (a rerun) adds nothing to its history; float noise is cut to 6 significant
    digits; a finished run found again keeps its end time unless there is work to do in it."""
    from lp_ray.tracking.tracker import Tracker, clean

    assert clean(0.1 * 0.1 * 0.1) == 0.001 and clean(-0.5624999999999991) == -0.5625
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "lp-ray/tiny", "h")
    run_id = tracker.start("a run", {"lp_ray.kind": "imp"})
    tracker.log_values(run_id, {"mean_gain_pt": 0.1 + 0.2})
    tracker.log_values(run_id, {"mean_gain_pt": 0.30000000000000004})
    assert [m.value for m in tracker.client.get_metric_history(run_id, "mean_gain_pt")] == [0.3]
    tracker.finish(run_id)
    ended = tracker.client.get_run(run_id).info.end_time
    again = tracker.start("a run", {"lp_ray.kind": "imp"}, work=False)
    tracker.finish(again)
    assert again == run_id and tracker.client.get_run(run_id).info.end_time == ended
