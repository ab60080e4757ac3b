"""Data sets behind one registry. Every data set yields an official train set (split here into train and a
seeded held-out validation set, paper Appendix D) and a test set touched only to report."""

from lp_ray.data.base import DataBundle, Source, TensorSource, make_split
from lp_ray.data.registry import load_data, materialize_data, preflight

__all__ = ["DataBundle", "Source", "TensorSource", "load_data", "make_split", "materialize_data", "preflight"]
