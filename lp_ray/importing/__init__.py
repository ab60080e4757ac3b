"""`lp-ray import`: tickets trained elsewhere as an lp-ray run directory (sources.py: the formats and
their name-mapping tables; command.py: the run directory)."""
