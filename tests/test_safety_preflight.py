"""Data safety, kind 4: every input and the environment are checked before anything is started or
written. A bad storage path, an unusable MLflow server or a store that does not exist stop a command
before Ray, MLflow or the run directory are touched."""

import pytest
from helpers import TINY_JOB, NothingChanges, Tmpfs, cli, one_error_line, tree_digest, write_yaml

pytestmark = pytest.mark.e2e


def test_storage_path_that_is_a_file(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("mine\n")
    job = write_yaml(tmp_path / "job.yaml", TINY_JOB)
    for storage in (blocker, blocker / "runs"):
        cluster = write_yaml(tmp_path / "cluster.yaml", {"storage_path": str(storage)})
        before = tree_digest(tmp_path)
        proc = cli("imp", "--job", str(job), "--cluster", str(cluster), cwd=tmp_path)
        one_error_line(proc, f"storage_path '{storage}': {blocker} is a file, not a directory")
        assert tree_digest(tmp_path) == before  # no mlflow.db, no runs/, the file as it was


@pytest.mark.skipif(not Tmpfs.available(), reason="needs root to mount a read-only tmpfs")
def test_storage_on_a_read_only_disk(tmp_path):
    job = write_yaml(tmp_path / "job.yaml", TINY_JOB)
    with Tmpfs(tmp_path / "ro") as disk:
        disk.read_only()
        cluster = write_yaml(tmp_path / "cluster.yaml", {"storage_path": str(disk.path / "runs")})
        before = tree_digest(tmp_path)
        proc = cli("imp", "--job", str(job), "--cluster", str(cluster), cwd=tmp_path)
        one_error_line(proc, f"cannot write in {disk.path} (Read-only file system)")
        assert tree_digest(tmp_path) == before


def test_report_with_an_unreachable_tracking_server_writes_nothing(finished):
    with NothingChanges(finished["run"], finished["cwd"], finished["tracking_uri"]):
        proc = cli("report", str(finished["run"]), "--tracking-uri", "http://127.0.0.1:9", cwd=finished["cwd"])
        one_error_line(proc, "MLflow tracking server http://127.0.0.1:9 is unreachable")
        assert "LT test acc" not in proc.stdout  # not even the table


def test_reading_commands_never_create_a_store(finished, tmp_path):
    # eval runs:/... against the default ./mlflow.db of a directory that has none
    proc = cli("eval", "runs:/0123456789abcdef0123456789abcdef", cwd=tmp_path)
    one_error_line(proc, "there is no MLflow store at sqlite:///")
    assert list(tmp_path.iterdir()) == []
    # report on a run whose store has gone: the report is written, no new store appears
    elsewhere = tmp_path / "elsewhere"
    proc = cli("report", str(finished["run"]), "--tracking-uri", f"sqlite:///{elsewhere}/mlflow.db", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not elsewhere.exists()
