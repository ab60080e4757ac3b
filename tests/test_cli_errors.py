"""Bad input through the real `lp-ray` command: one line naming the problem, a non-zero exit, and no
files written. None of these start Ray."""

from helpers import cli, write_yaml


def one_line_error(proc, *fragments):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for f in fragments:
        assert f in lines[0], lines[0]


def test_missing_job_file(tmp_path):
    one_line_error(cli("imp", "--job", str(tmp_path / "nope.yaml"), cwd=tmp_path), "nope.yaml: no such file")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_malformed_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train: {epochs: 3\n")
    one_line_error(cli("imp", "--job", str(p), cwd=tmp_path), "bad.yaml: malformed YAML (line")
    assert not (tmp_path / "runs").exists()


def test_impossible_value_names_key_and_file(tmp_path):
    p = write_yaml(tmp_path / "job.yaml", {"imp": {"rate": 1}})
    one_line_error(cli("imp", "--job", str(p), cwd=tmp_path), "job.yaml: imp.rate: must be in [0, 1), got 1.0")


def test_bad_cluster_spec(tmp_path):
    c = write_yaml(tmp_path / "c.yaml", {"num_workers": "two"})
    one_line_error(
        cli("imp", "--cluster", str(c), cwd=tmp_path), "c.yaml: num_workers: expected an integer, got str 'two'"
    )


def test_unreachable_mlflow_fails_fast(tmp_path):
    import time

    t0 = time.time()
    proc = cli("imp", "--tracking-uri", "http://127.0.0.1:9", cwd=tmp_path)
    one_line_error(proc, "MLflow tracking server http://127.0.0.1:9 is unreachable")
    assert time.time() - t0 < 30
    assert not (tmp_path / "runs").exists()


def test_commands_on_a_wrong_path(tmp_path):
    one_line_error(cli("tickets", str(tmp_path / "nowhere")), "nowhere: no such run directory")
    one_line_error(cli("pool", str(tmp_path / "nowhere")), "nowhere: not an lp-ray run directory (no job.yaml)")
    one_line_error(cli("report", str(tmp_path / "nowhere")), "nowhere: no such run directory")
    one_line_error(cli("eval", str(tmp_path / "x" / "y.safetensors")), "not inside an lp-ray run directory")


def test_bad_pool_options(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_yaml(run / "job.yaml", {"name": "x"})
    one_line_error(
        cli("pool", str(run), "--coefficients", "0.5,abc"), "--coefficients: expected comma-separated numbers"
    )
    one_line_error(
        cli("pool", str(run), "--coefficients", "0.5,1.5"),
        "--coefficients: must be a non-empty list of numbers in (0, 1)",
    )
    one_line_error(cli("pool", str(run), "--method", "magic"), "--method: unknown method 'magic' (known: interpolation")
    one_line_error(cli("pool", str(run), "--targets", "1,x"), "--targets: expected comma-separated integers")
    # the same rules as a spec file, named by the option that broke them
    one_line_error(cli("pool", str(run), "--search-num", "0"), "--search-num: must be at least 1, got 0")
    one_line_error(cli("pool", str(run), "--search", "slow"), "--search: unknown search 'slow' (known: exact, fast)")
    one_line_error(cli("pool", str(run), "pool.screen_fraction=1.5"), "pool.screen_fraction: must be in (0, 1)")
    one_line_error(cli("pool", str(run), "--targets", ""), "--targets: must be a non-empty list of rounds")
    one_line_error(cli("pool", str(run), "pool.ema_decay=2"), "pool.ema_decay=2: pool.ema_decay: must be in (0, 1)")
    one_line_error(cli("pool", str(run), "train.epochs=3"), "train.epochs=3: only pool.* fields can be set")
    for name in ("..", "a/b", ".hidden"):
        one_line_error(cli("pool", str(run), "--name", name, "--overwrite"), "--name: must be a plain folder name")
    assert sorted(p.name for p in run.iterdir()) == ["job.yaml"]  # nothing written, nothing deleted


def test_job_overrides_are_checked_like_the_spec_file(tmp_path):
    one_line_error(cli("imp", "train.epochz=3", cwd=tmp_path), "train.epochz=3: unknown key 'train.epochz' (known: ")
    one_line_error(cli("imp", "epochs", cwd=tmp_path), "'epochs': expected key=value with a dotted key")
    one_line_error(
        cli("imp", "train.epochs=0", cwd=tmp_path),
        "the default job with train.epochs=0: train.epochs: must be at least 1, got 0",
    )
    one_line_error(cli("imp", "train.epochs=ten", cwd=tmp_path), "train.epochs: expected an integer, got str 'ten'")
    p = write_yaml(tmp_path / "job.yaml", {"train": {"epochs": 10, "lr_drops": [5]}})
    one_line_error(
        cli("imp", "--job", str(p), "imp.rewind_epoch=10", cwd=tmp_path),
        f"{p} with imp.rewind_epoch=10: imp.rewind_epoch: must be in [0, train.epochs=10), got 10",
    )
    # a recipe's bad values (the transformer recipes), in a job file and as overrides
    vit = write_yaml(tmp_path / "vit.yaml", {"model": {"name": "vit"}, "train": {"optimizer": "adam"}})
    one_line_error(
        cli("run", "--job", str(vit), cwd=tmp_path),
        f"{vit}: train.optimizer: unknown optimizer 'adam' (known: sgd, adamw)",
    )
    one_line_error(
        cli("imp", "train.schedule=cosine", "train.grad_clip=-1", cwd=tmp_path),
        "train.grad_clip: must be positive (or null: no clipping), got -1.0",
    )
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_unknown_names_fail_before_anything_starts(tmp_path):
    # names are checked against their registries when the spec loads, before Ray, MLflow or training
    one_line_error(cli("run", "--method", "bogus", cwd=tmp_path), "--method: unknown method 'bogus'")
    one_line_error(cli("imp", "model.name=resnet9000", cwd=tmp_path), "model.name: unknown model 'resnet9000'")
    one_line_error(cli("run", "model.width=-4", cwd=tmp_path), "model.width: must be at least 1, got -4")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_missing_cifar_archive_says_where_and_creates_nothing(tmp_path):
    from pathlib import Path

    job = Path(__file__).resolve().parent.parent / "jobs" / "cifar10-resnet18.yaml"
    proc = cli("imp", "--job", str(job), cwd=tmp_path)
    one_line_error(
        proc,
        f"{tmp_path}/data/cifar-10-python.tar.gz: no such file; download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html",
    )
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_bad_mlflow_model_options_fail_before_anything_starts(tmp_path):
    one_line_error(
        cli("run", "--log-models", "some", cwd=tmp_path), "--log-models must be one of best, pooled, all, none"
    )
    one_line_error(cli("run", "--register", "my/net", cwd=tmp_path), "'my/net' is not a registered model name")
    one_line_error(cli("imp", "--log-models", "", cwd=tmp_path), "--log-models must be one of")
    assert list(tmp_path.iterdir()) == []  # no run directory, no store
