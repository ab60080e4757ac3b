"""Fixtures: one Ray cluster and one SQLite MLflow store per test session, i.e. per xdist worker under
`make test` (starting a private Ray costs each command ~5-10 s of start-up and shutdown, a new store
~7 s), and the main job on the tiny job, run once per session and copied into each end-to-end module
that asks for it (each module works on its own copy, so no test depends on another module having run
first, or sees what another one changed)."""

from __future__ import annotations

import pytest
from helpers import TINY_JOB, cli, only_run, relocate_run, start_ray_head, stop, tiny_cluster, write_yaml

# `make test` runs the suite on 2 pytest-xdist workers (`--dist loadgroup`): the end-to-end tests spend
# about a quarter of the time with a core idle while one process starts (a driver importing torch, a
# Ray Train controller), which the other worker's tests fill. Session fixtures are per worker (each
# worker has its own Ray cluster and store), so the modules that copy the finished main run share one
# group (the run is made once), and every other module is its own group (its module fixtures are made
# once). Without xdist these markers do nothing.
FINISHED_RUN_GROUP = "finished-run"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    by_module: dict = {}
    for item in items:
        by_module.setdefault(item.module, []).append(item)
    for module, tests in by_module.items():
        uses_run = any("finished_template" in t.fixturenames for t in tests)
        group = FINISHED_RUN_GROUP if uses_run else module.__name__
        for t in tests:
            t.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(optionalhook=True)  # an xdist hook: without xdist, never called
def pytest_xdist_node_collection_finished(node, ids):
    """xdist tells its scheduler a test's group by appending it to the test's id; with pytest 9.2 the
    ids stay as they were and the groups are silently lost (pytest-xdist#1386; pyproject.toml pins
    pytest below 9.2 until that is fixed): the finished run and every module fixture would be made on
    both workers. Say so instead of running a suite that much slower."""
    if node.config.getvalue("dist") == "loadgroup" and ids and "@" not in ids[0]:
        pytest.exit(
            f"pytest-xdist's --dist loadgroup lost the test groups (e.g. {ids[0]}): this pytest and "
            "pytest-xdist do not work together (pytest-xdist#1386); `make install` installs versions that do",
            returncode=4,
        )


@pytest.fixture(scope="session", autouse=True)
def generated_data_cache(tmp_path_factory):
    """One cache of generated data sets for the whole session (every command the tests run inherits the
    variable), as a user's machine has one: the tiny job's examples are generated once, not once per
    run (~5 s each on 2 cores), and the user's own cache is never touched."""
    import os

    os.environ["LP_RAY_CACHE_DIR"] = str(tmp_path_factory.mktemp("lp-ray-cache"))
    yield
    os.environ.pop("LP_RAY_CACHE_DIR", None)


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory):
    """A Ray cluster on this machine, started as a user would (`ray start --head`), that the commands of
    the session join through their cluster spec's `address:` instead of each starting a private Ray.
    Tests that kill a command (and with it the Ray it started) keep a private one."""
    log = open(tmp_path_factory.mktemp("ray") / "head.log", "w")
    address, proc = start_ray_head(log)
    try:
        yield address
    finally:
        stop(proc)
        log.close()


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="session")
def finished_template(tmp_path_factory, ray_address):
    """The main job on the tiny job, made once per session as a user runs it: `lp-ray run` (imp with 2
    DDP workers, pool, report) with its own MLflow store, and with a worker killed hard once in round 1
    after its epoch-2 checkpoint. The original that each module needing a finished run copies (one run
    instead of one per module: each costs ~20 s on 2 cores); its output is kept in `run.stdout`."""
    d = tmp_path_factory.mktemp("finished-template")
    job = write_yaml(d / "tiny.yaml", TINY_JOB)
    cluster = write_yaml(d / "cluster.yaml", tiny_cluster(d / "runs", ray_address))
    proc = cli(
        "run",
        "--job",
        str(job),
        "--cluster",
        str(cluster),
        "--tracking-uri",
        f"sqlite:///{d / 'mlflow.db'}",
        cwd=d,
        env={"LP_RAY_INJECT_FAILURE": "1:2"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    only_run(d)  # exactly one run directory
    (d / "run.stdout").write_text(proc.stdout)
    return d


def _module_copy(tmp_path_factory, template, ray_address, name: str) -> tuple:
    """A module's own copy of the template run, and a cluster spec on the session's Ray that points at it."""
    d = tmp_path_factory.mktemp(name)
    run = relocate_run(template, d / "copy")
    cluster = write_yaml(d / "cluster.yaml", tiny_cluster(d / "copy" / "runs", ray_address))
    return d, run, cluster


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, finished_template, ray_address):
    """This module's own copy of the finished main run (see `finished_template`), as if it had been made
    here: its run directory, job and cluster specs, MLflow store and the command's output."""
    d, run, cluster = _module_copy(tmp_path_factory, finished_template, ray_address, "base")
    return {
        "dir": d / "copy",
        "run": run,
        "job": d / "copy" / "tiny.yaml",
        "cluster": cluster,
        "stdout": (d / "copy" / "run.stdout").read_text().replace(str(finished_template), str(d / "copy")),
        "tracking_uri": f"sqlite:///{d / 'copy' / 'mlflow.db'}",
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory, finished_template, ray_address):
    """This module's own copy of the finished run: its run directory, store, cluster spec and a clean
    working directory to run commands in."""
    d, run, cluster = _module_copy(tmp_path_factory, finished_template, ray_address, "finished")
    cwd = d / "cwd"
    cwd.mkdir()
    return {"run": run, "cluster": cluster, "tracking_uri": f"sqlite:///{d / 'copy' / 'mlflow.db'}", "cwd": cwd}
