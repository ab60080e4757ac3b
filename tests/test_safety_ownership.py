"""Data safety, kind 1: a command deletes only what it owns. `--name` is a plain folder name under
pool/, and `--overwrite` removes only pool/<name>/, and only once everything else has been checked."""

import pytest
from helpers import NothingChanges, cli, one_error_line, tree_digest

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("name", ["..", "../..", ".", "", "a/b", "/tmp", ".hidden", "rounds/../.."])
def test_a_name_that_is_a_path_is_refused_and_nothing_is_deleted(finished, name):
    with NothingChanges(finished["run"], finished["cwd"], finished["tracking_uri"]):
        proc = cli("pool", str(finished["run"]), "--name", name, "--overwrite", "--serial", cwd=finished["cwd"])
        one_error_line(proc, "--name: must be a plain folder name")


def test_overwrite_removes_only_its_own_folder_and_only_after_the_checks(finished):
    run, cwd = finished["run"], finished["cwd"]
    args = ["pool", str(run), "--serial", "--name", "mine", "--method", "average", "--targets", "0"]
    first = cli(*args, cwd=cwd)
    assert first.returncode == 0, first.stdout + first.stderr
    outside = {k: v for k, v in tree_digest(run).items() if not k.startswith("pool/mine/")}
    mine = {k: v for k, v in tree_digest(run).items() if k.startswith("pool/mine/")}
    assert "pool/mine/target_00.safetensors" in mine

    # a bad target is refused before --overwrite removes the earlier search
    with NothingChanges(run, cwd, finished["tracking_uri"]):
        one_error_line(cli(*args[:-1], "7", "--overwrite", cwd=cwd), "--targets: round(s) [7] have no finished ticket")

    # different settings in the same folder: refused without --overwrite, replaced with it
    with NothingChanges(run, cwd, finished["tracking_uri"]):
        one_error_line(cli(*args, "--coefficients", "0.3", cwd=cwd), "holds a search with different settings")
    again = cli(*args, "--coefficients", "0.3", "--overwrite", cwd=cwd)
    assert again.returncode == 0, again.stdout + again.stderr
    after = tree_digest(run)
    # everything outside pool/mine/ is byte for byte what it was (the report and plot are not rewritten)
    assert {k: v for k, v in after.items() if not k.startswith("pool/mine/")} == outside
    assert after["pool/mine/settings.json"] != mine["pool/mine/settings.json"]
