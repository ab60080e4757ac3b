"""Data sets behind one registry (`registry.py`). Every data set yields an official train set (split into
train and a seeded held-out validation set, paper Appendix D, by `loading.py`) and a test set touched
only to report. Importing this package imports no torch: the registry and its checks stay light."""
