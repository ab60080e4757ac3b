"""Reports, rebuilt from what is on disk at any time: `run.py` for one run directory, `experiment.py`
for an experiment directory over seeds, `command.py` the `lp-ray report` command that writes, prints
and logs either."""
