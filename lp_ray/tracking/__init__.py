"""MLflow, owned by the driver (docs/architecture.md, "Tracking"); nothing else in lp-ray imports mlflow.

stores.py    which store a command logs to, whether one exists, where its artifacts go, the UI URL
tracker.py   `Tracker`: finding or creating runs by their tags (so a rerun never duplicates one),
             logging values (rounded, once), files, descriptions, start and end times
logged.py    what lp-ray logs: an IMP run and its rounds, a search and its targets, a report, an
             analysis, a sweep and its trials; their names, metrics and figures
"""
