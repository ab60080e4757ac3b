"""Data safety, kind 5: one error boundary. A full disk, read-only storage, corrupt data files, a binary
spec and a malformed command line are each one `error:` line naming the file and the cause, never a
traceback, and a failed write leaves no temporary file behind."""

import shutil

import pytest
from helpers import NothingChanges, Tmpfs, cli, one_error_line, tree_digest

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    "args, message",
    [
        (["imp", "--bogus"], "error: No such option: --bogus"),
        (["nope"], "error: No such command 'nope'."),
        (["pool"], "error: Missing argument 'run_dir'."),
        (["imp", "--rounds", "x"], "error: Invalid value for '--rounds'"),
    ],
)
def test_usage_errors_are_one_line_with_a_pointer_to_help(tmp_path, args, message):
    proc = cli(*args, cwd=tmp_path)
    line = one_error_line(proc, message, code=2)
    assert line.endswith("--help`)") and "lp-ray" in line
    assert list(tmp_path.iterdir()) == []


def test_a_binary_file_as_a_job_spec(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_bytes(bytes(range(256)) * 4)
    one_error_line(cli("imp", "--job", str(spec), cwd=tmp_path), f"{spec}: not a text file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"]


@pytest.mark.parametrize("name", ["split.safetensors", "dataset.safetensors"])
def test_corrupt_data_files_of_a_run(finished, name):
    path = finished["run"] / name
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 3])
    try:
        with NothingChanges(finished["run"], finished["cwd"], finished["tracking_uri"]):
            for args in (
                ["pool", str(finished["run"]), "--serial", "--name", "x"],
                ["eval", str(finished["run"] / "rounds" / "round_00" / "ticket.safetensors")],
            ):
                one_error_line(cli(*args, cwd=finished["cwd"]), f"{path}: corrupt or truncated")
    finally:
        path.write_bytes(good)


@pytest.fixture
def run_on_tmpfs(finished, tmp_path):
    """A copy of the finished run on its own small tmpfs (its records, tickets and data; Ray Train's
    train/ checkpoint folder is not needed to pool or report)."""
    if not Tmpfs.available():
        pytest.skip("needs root to mount a tmpfs")
    src = finished["run"]
    with Tmpfs(tmp_path / "disk", size_kb=16384) as disk:
        run = disk.path / src.name
        shutil.copytree(src, run, ignore=lambda d, names: {"train"} & set(names) if d == str(src) else set())
        yield disk, run


def test_a_full_disk(finished, run_on_tmpfs):
    disk, run = run_on_tmpfs
    disk.fill()
    before = tree_digest(run)
    for args, what in (
        # (the search's lease is its first write)
        (["pool", str(run), "--serial", "--name", "more", "--method", "average"], "lease.pool.more.json"),
        (["report", str(run)], "report."),
    ):
        proc = cli(*args, cwd=finished["cwd"])
        one_error_line(proc, what, "cannot write it (No space left on device)")
        assert "Traceback" not in proc.stderr
    assert tree_digest(run) == before  # the old report kept whole, no half-written file
    assert not list(run.rglob(".tmp-*"))


def test_a_read_only_run_directory(finished, run_on_tmpfs):
    disk, run = run_on_tmpfs
    disk.read_only()
    before = tree_digest(run)
    proc = cli("pool", str(run), "--name", "more", "--method", "average", cwd=finished["cwd"])
    one_error_line(proc, f"cannot write in {run} (Read-only file system)")
    proc = cli("report", str(run), cwd=finished["cwd"])
    one_error_line(proc, "report.", "Read-only file system")
    assert tree_digest(run) == before
