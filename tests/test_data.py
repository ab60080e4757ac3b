import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
from helpers import cifar_archive

from lp_ray.data.base import make_split, random_crop_flip
from lp_ray.data.cifar import read_archive
from lp_ray.data.loading import load_data, materialize_data
from lp_ray.errors import LpRayError
from lp_ray.spec_loading import job_from_dict
from lp_ray.store import RunDir


def test_split_disjoint_stable_and_ten_percent():
    train, val = make_split(1000, 0.1, seed=0)
    assert len(val) == 100 and len(train) == 900
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))
    again_train, again_val = make_split(1000, 0.1, seed=0)
    assert torch.equal(val, again_val) and torch.equal(train, again_train)
    assert not torch.equal(make_split(1000, 0.1, seed=1)[1], val)


def test_split_is_stored_with_the_run(tmp_path):
    job = job_from_dict(
        {"data": {"dataset": "synthetic", "shape": [4], "num_classes": 3, "num_train": 200, "num_test": 50}}
    )
    run = RunDir(str(tmp_path / "run"))
    first = materialize_data(job, run)
    assert run.exists("split.safetensors")
    # A later reader (a worker, a pool evaluator) gets the stored split even if the seed were different.
    from lp_ray.data import loading

    loading._CACHE.clear()
    job2 = job_from_dict(
        {
            "data": {
                "dataset": "synthetic",
                "shape": [4],
                "num_classes": 3,
                "num_train": 200,
                "num_test": 50,
                "split_seed": 7,
            }
        }
    )
    second = load_data(job2, run)
    assert torch.equal(first.val_idx, second.val_idx)
    loading._CACHE.clear()
    with pytest.raises(LpRayError, match="split.safetensors: missing"):
        load_data(job, RunDir(str(tmp_path / "other")))


def test_mnist1d_generated_offline_and_stored(tmp_path):
    job = job_from_dict({"data": {"dataset": "mnist1d", "num_samples": 1000}})
    run = RunDir(str(tmp_path / "run"))
    data = materialize_data(job, run)
    assert run.exists("dataset.safetensors")
    assert len(data.train) == 800 and len(data.test) == 200
    assert data.input_shape == (40,) and data.num_classes == 10
    assert len(data.val_idx) == 80
    x, y = data.train.batch(data.val_idx[:5], augment=False, gen=None)
    assert x.shape == (5, 40) and x.dtype == torch.float32 and y.max() < 10


def test_generated_data_comes_from_the_machine_cache_bit_for_bit_and_a_bad_entry_is_regenerated(tmp_path, monkeypatch):
    from lp_ray.data import generated_cache, loading, mnist1d

    monkeypatch.setenv("LP_RAY_CACHE_DIR", str(tmp_path / "cache"))
    job = job_from_dict({"data": {"dataset": "mnist1d", "num_samples": 1000}})
    real, calls = mnist1d.generate, []
    monkeypatch.setattr(mnist1d, "generate", lambda spec: calls.append(spec) or real(spec))

    def dataset_bytes(name: str) -> bytes:
        loading._CACHE.clear()  # a new process, as each command is
        run = RunDir(str(tmp_path / name))
        materialize_data(job, run)
        return (tmp_path / name / "dataset.safetensors").read_bytes()

    generated = dataset_bytes("first")
    (entry,) = (tmp_path / "cache" / "generated").iterdir()
    assert len(calls) == 1 and entry.name.startswith("mnist1d-")
    assert dataset_bytes("second") == generated and len(calls) == 1  # from the cache: not generated again

    # Another generator argument is another entry: never the cached examples.
    other = job_from_dict({"data": {"dataset": "mnist1d", "num_samples": 1000, "generator": {"seed": 7}}})
    assert generated_cache.entry_name("mnist1d", mnist1d.generator_inputs(other.data)) != entry.name

    # A changed byte in the examples (or a truncated file) fails the entry's digest: generated again.
    for damage in (lambda b: b[:-9] + bytes([b[-9] ^ 1]) + b[-8:], lambda b: b[: len(b) // 2]):
        entry.write_bytes(damage(entry.read_bytes()))
        before = len(calls)
        assert dataset_bytes(f"after-damage-{before}") == generated and len(calls) == before + 1
        assert generated_cache.get("mnist1d", mnist1d.generator_inputs(job.data)) is not None  # replaced

    # Turned off, or not writable: the run still gets its data, generated.
    monkeypatch.setenv("LP_RAY_CACHE_DIR", "")
    assert dataset_bytes("off") == generated and generated_cache.cache_dir() is None
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("LP_RAY_CACHE_DIR", str(tmp_path / "a-file"))
    assert dataset_bytes("unwritable") == generated
    monkeypatch.delenv("LP_RAY_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert generated_cache.cache_dir() == tmp_path / "xdg" / "lp-ray" / "generated"


def test_cifar10_archive_reader(tmp_path):
    path = cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    x_train, y_train, x_test, y_test = read_archive(path, "cifar10")
    assert x_train.shape == (20, 3, 32, 32) and x_train.dtype == np.uint8
    assert x_test.shape == (4, 3, 32, 32) and y_train.shape == (20,)
    # Through the registry: normalized tensors, 10% validation carved from train.
    job = job_from_dict({"data": {"dataset": "cifar10", "path": str(tmp_path)}, "model": {"name": "cifar_resnet18"}})
    data = materialize_data(job, RunDir(str(tmp_path / "run")))
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert len(data.val_idx) == 2 and len(data.train_idx) == 18
    x, _ = data.train.batch(torch.arange(4), augment=True, gen=torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 32, 32)


def test_cifar100_archive_reader(tmp_path):
    path = cifar_archive(tmp_path / "cifar-100-python.tar.gz", dataset="cifar100")
    x_train, y_train, _, _ = read_archive(path, "cifar100")
    assert x_train.shape == (4, 3, 32, 32) and y_train.dtype == np.int64


def test_cifar_missing_and_malicious_archives(tmp_path):
    job = job_from_dict({"data": {"dataset": "cifar10", "path": str(tmp_path / "nowhere")}})
    with pytest.raises(
        LpRayError, match=r"no such file; download cifar-10-python.tar.gz from https://www.cs.toronto.edu"
    ):
        materialize_data(job, RunDir(str(tmp_path / "run")))
    # A pickle that would run code is refused, not executed.
    evil = tmp_path / "evil" / "cifar-10-python.tar.gz"
    evil.parent.mkdir()

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    raw = pickle.dumps(Boom())
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    with pytest.raises(LpRayError, match="refusing to load builtins.print"):
        read_archive(evil, "cifar10")
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(LpRayError, match="unreadable cifar10 archive"):
        read_archive(bad, "cifar10")


def test_crop_flip_is_a_shifted_or_flipped_copy():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    out = random_crop_flip(2)(x, torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    for i in range(2):
        # Every nonzero value of the crop comes from the original image (padding contributes zeros).
        vals = set(out[i].flatten().tolist()) - {0.0}
        assert vals <= set(x[i].flatten().tolist())


def test_imagenet_without_torchvision_says_how_to_fix():
    from lp_ray.data.imagenet import require_torchvision

    try:
        import torchvision  # noqa: F401

        pytest.skip("torchvision is importable here")
    except Exception:
        pass
    with pytest.raises(LpRayError, match=r"lp-ray\[vision\]"):
        require_torchvision()
