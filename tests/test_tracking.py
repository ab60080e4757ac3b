"""MLflow store set-up: two commands starting at once on a brand-new sqlite store."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_two_processes_creating_one_new_sqlite_store_both_get_the_experiment(tmp_path):
    # All would run the store's schema migrations at the same moment; unserialized, one of them failed
    # ("No such index ...") when two fidelity seeds started side by side, or all left it broken.
    code = (
        f"from lp_ray.tracking import Tracker; "
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


def test_artifacts_of_a_sqlite_store_live_beside_it(tmp_path, monkeypatch):
    # MLflow's default would put them in ./mlruns of whatever directory the command runs in.
    from lp_ray.tracking import Tracker

    store, elsewhere = tmp_path / "store", tmp_path / "cwd"
    store.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    tracker = Tracker(f"sqlite:///{store / 'mlflow.db'}", "tiny", "h")
    run_id = tracker.imp_run({"a": 1}, "/runs/x")
    (elsewhere / "note.txt").write_text("hello")
    tracker.log_artifact(run_id, str(elsewhere / "note.txt"), "report")
    exp = tracker.client.get_experiment(tracker.experiment_id)
    assert exp.artifact_location == (store / "mlartifacts" / "tiny").as_uri()
    assert (store / "mlartifacts" / "tiny" / run_id / "artifacts" / "report" / "note.txt").read_text() == "hello"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["note.txt"]  # no mlruns/ here
