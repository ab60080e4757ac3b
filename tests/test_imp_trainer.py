"""The trainer an IMP fit runs: Ray Train's TorchTrainer less Ray Data's callback, and less the placement-
group cleaner when the fit runs in a command's driver (its Ray job ends with the command). The callbacks
are built before fit() starts anything, so most of this needs no Ray."""

import pytest
from helpers import as_driver
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks import DatasetsCallback

from lp_ray.imp.command import imp_trainer_class

CLEANER = "PlacementGroupCleanerCallback"


def _names(trainer) -> list[str]:
    return [type(c).__name__ for c in trainer._create_default_callbacks()]


def _loop(config):
    pass


@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")  # Ray's callback copies its own config
@pytest.mark.parametrize("in_driver", [True, False])
def test_the_imp_trainer_leaves_out_only_what_an_imp_fit_has_no_use_for(in_driver):
    ours = imp_trainer_class(in_driver)(_loop, scaling_config=ScalingConfig(num_workers=1))
    plain = TorchTrainer(_loop, scaling_config=ScalingConfig(num_workers=1))
    assert isinstance(ours, TorchTrainer)
    assert DatasetsCallback.__name__ in _names(plain) and CLEANER in _names(plain)
    left_out = {DatasetsCallback.__name__, CLEANER} if in_driver else {DatasetsCallback.__name__}
    assert _names(ours) == [n for n in _names(plain) if n not in left_out]


def test_a_command_is_a_driver_and_a_sweep_trial_is_not(ray_address):
    """fit_in_driver() as Ray reports it: True in a process that joined the cluster as a driver (a command),
    False inside an actor (where a sweep's Tune trials run their fits)."""
    code = """
from lp_ray.imp.command import fit_in_driver


@ray.remote(num_cpus=0)
class Trial:
    def in_driver(self):
        return fit_in_driver()


print(fit_in_driver(), ray.get(Trial.remote().in_driver.remote()))
"""
    assert as_driver(ray_address, code).split() == ["True", "False"]
