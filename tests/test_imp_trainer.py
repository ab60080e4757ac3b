"""The trainer an IMP fit runs: Ray Train's TorchTrainer with every default callback but Ray Data's (no
Ray needed: the callbacks are built before fit() starts anything)."""

import pytest
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks import DatasetsCallback

from lp_ray.imp.command import imp_trainer_class


def _names(trainer) -> list[str]:
    return [type(c).__name__ for c in trainer._create_default_callbacks()]


@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")  # Ray's callback copies its own config
def test_the_imp_trainer_starts_no_dataset_manager_and_keeps_every_other_callback():
    def loop(config):
        pass

    ours = imp_trainer_class()(loop, scaling_config=ScalingConfig(num_workers=1))
    plain = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=1))
    assert isinstance(ours, TorchTrainer)
    assert DatasetsCallback.__name__ in _names(plain) and DatasetsCallback.__name__ not in _names(ours)
    assert _names(ours) == [n for n in _names(plain) if n != DatasetsCallback.__name__]
    assert "PlacementGroupCleanerCallback" in _names(ours)  # fault handling stays as Ray Train has it
