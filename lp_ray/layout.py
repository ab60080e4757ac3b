"""The run directory's layout: the one place that names its files (docs/architecture.md, "The run directory").

Every path is relative to the run directory `<storage>/<job>-<hash>/`; `RunDir` (store.py) reads and
writes them. A file that is not named here is not part of a run.

    job.yaml                           the resolved job spec
    split.safetensors                  train/validation indices (written once)
    dataset.safetensors                generated data sets only (mnist1d), so a package upgrade changes nothing
    rewind.safetensors                 weights after the rewind epoch (written by round 0)
    rewind_optimizer.safetensors       the optimizer's state there, where the recipe rewinds it (AdamW)
    tracking.json                      where the run logs in MLflow (TrackingInfo)
    rounds.parquet                     one row per finished round, rebuilt from the tickets' meta.json
    rounds/round_RR/
        mask.safetensors               the round's mask (round 0 is dense and has none)
        ticket.safetensors             weights + mask
        meta.json                      TicketMeta; written last: the round's "done" marker
        history.json                   per-epoch metrics (a particle round: each particle's)
        particle_PP.safetensors        imp.particles > 1, rounds >= 1: particle PP's trained weights
        particle_PP.json               its record (validation, test, history); written after its weights:
                                       the particle's "done" marker. The ticket is the particles' soup.
    train/fit_NN/                      Ray Train's own storage for the NN-th `lp-ray imp` fit of the run
        checkpoint_*/                  (one per invocation that trained); each epoch checkpoint holds
                                       model.safetensors, optimizer.safetensors (momentum by parameter
                                       name), best.safetensors (select: best_val) and state.json (round,
                                       epoch, history); a particle round's hold particle_PP/ folders of
                                       those files, and state.json says which particles are in it
    pool/<name>/                       one search (<name> is the method unless --name says otherwise)
        settings.json                  what the search was run with (a resumed search must match)
        trace.parquet                  one row per evaluation
        target_RR.safetensors          the pooled network of target RR (weights + mask)
        predictions_RR.parquet         per test example: label and the predicted class of LT, LT+BN, pooled
        target_RR.json                 its result and decisions; written last: the target's "done" marker
        summary.parquet                one row per finished target
    report.csv, report.parquet, report.png
    analysis/<name>/                   `lp-ray analyze <name>`: its tables (.parquet) and <name>.png
        corruptions.safetensors        (robustness, MNIST-1D) the generated corrupted test sets, kept
    import.json                        `lp-ray import` only: the format, each source file's sha256
    plugins/<module>.py                the job's own plugin modules, as they were (job.yaml's
                                       plugin_versions has each one's sha256): later commands use these
    lease.imp.json, lease.pool.<name>.json, lease.analysis.<name>.json
                                       who is working on the run, its search or its analysis now
                                       (lease.py); removed when the command ends

The experiment directory `<storage>/experiments/<name>-<hash>/` of `lp-ray sweep`:

    experiment.json                    the resolved experiment and its trials (its identity)
    trials.parquet                     trial, cell, seed, run directory, status; rebuilt at every start
    report.csv, report.parquet, report.png, verdict.txt
    pairs.csv, pairs.parquet           with `reference:`: every pool variant paired with the reference one
    tune/                              Ray Tune's own storage (trial logs)
    lease.sweep.json                   while a sweep runs (lease.py)
"""

from __future__ import annotations

import re

JOB = "job.yaml"
SPLIT = "split.safetensors"
DATASET = "dataset.safetensors"
REWIND = "rewind.safetensors"
# The optimizer's state at the rewind point, where the job's recipe rewinds it (lp_ray/recipes.py).
REWIND_OPTIMIZER = "rewind_optimizer.safetensors"
TRACKING = "tracking.json"
PLUGINS = "plugins"
ROUNDS_TABLE = "rounds.parquet"
ROUNDS = "rounds"
POOL = "pool"
ANALYSIS = "analysis"
REPORT_FORMATS = ("csv", "parquet", "png")

TRAIN = "train"
IMPORT_RECORD = "import.json"

# The experiment directory
EXPERIMENTS = "experiments"  # under the storage path
EXPERIMENT = "experiment.json"
TRIALS = "trials.parquet"
VERDICT = "verdict.txt"
TUNE = "tune"
EXPERIMENT_REPORT = ("report.csv", "report.parquet", "report.png", VERDICT)
PAIRS_CSV, PAIRS_PARQUET = "pairs.csv", "pairs.parquet"  # pool variants paired with the reference

# Inside one epoch checkpoint (imp/loop.py writes them; a new fit resumes from the newest usable one).
CHECKPOINT_MODEL = "model.safetensors"
CHECKPOINT_OPTIMIZER = "optimizer.safetensors"
CHECKPOINT_BEST = "best.safetensors"
CHECKPOINT_STATE = "state.json"


def round_dir(r: int) -> str:
    return f"{ROUNDS}/round_{r:02d}"


def parse_round_dir(name: str) -> int | None:
    """The round of a `round_RR` folder name under rounds/, or None for anything else."""
    return int(name[6:]) if name.startswith("round_") and name[6:].isdigit() else None


def ticket(r: int) -> str:
    return f"{round_dir(r)}/ticket.safetensors"


def mask(r: int) -> str:
    return f"{round_dir(r)}/mask.safetensors"


def ticket_meta(r: int) -> str:
    return f"{round_dir(r)}/meta.json"


def history(r: int) -> str:
    return f"{round_dir(r)}/history.json"


def particle_weights(r: int, p: int) -> str:
    return f"{round_dir(r)}/particle_{p:02d}.safetensors"


def particle_record(r: int, p: int) -> str:
    return f"{round_dir(r)}/particle_{p:02d}.json"


def checkpoint_particle(p: int) -> str:
    """A particle's folder inside an epoch checkpoint of a particle round (its model, optimizer, state)."""
    return f"particle_{p:02d}"


def injected_failure(r: int, epoch: int) -> str:
    """Marker of the test hook that kills a worker once (imp/loop.py)."""
    return f"{round_dir(r)}/injected_failure_{epoch}"


def train_fit(n: int) -> str:
    """Ray Train's storage for the run's n-th fit: `<job>-<hash>/train/fit_NN` puts its checkpoints in the
    run directory. (Runs made when every round was its own fit have them under `round_RR/`.)"""
    return f"{TRAIN}/fit_{n:02d}"


def parse_fit(name: str) -> int | None:
    """n of a `fit_NN` folder name under train/, or None for anything else."""
    return int(name[4:]) if name.startswith("fit_") and name[4:].isdigit() else None


def plugin_source(module: str) -> str:
    return f"{PLUGINS}/{module}.py"


def pool_dir(name: str) -> str:
    return f"{POOL}/{name}"


def pool_settings(name: str) -> str:
    return f"{pool_dir(name)}/settings.json"


def trace(name: str) -> str:
    return f"{pool_dir(name)}/trace.parquet"


def summary(name: str) -> str:
    return f"{pool_dir(name)}/summary.parquet"


def target_weights(name: str, t: int) -> str:
    return f"{pool_dir(name)}/target_{t:02d}.safetensors"


def predictions(name: str, t: int) -> str:
    return f"{pool_dir(name)}/predictions_{t:02d}.parquet"


def target_meta(name: str, t: int) -> str:
    return f"{pool_dir(name)}/target_{t:02d}.json"


def analysis_file(name: str, file: str) -> str:
    return f"{ANALYSIS}/{name}/{file}"


def report(fmt: str) -> str:
    return f"report.{fmt}"


def corruptions() -> str:
    """The robustness analysis's generated corrupted test sets (MNIST-1D), stored once per run."""
    return analysis_file("robustness", "corruptions.safetensors")


def parse_target_meta(name: str) -> int | None:
    """The target of a `target_RR.json` file name in a search folder, or None for any other file."""
    m = re.fullmatch(r"target_(\d+)\.json", name)
    return int(m.group(1)) if m else None


def parse_weights(rel: str) -> tuple[str, int] | tuple[str, str, int] | None:
    """What a weights path inside a run directory is: ("ticket", round), ("pooled", search name, target),
    or None (e.g. the rewind point)."""
    if m := re.fullmatch(r"rounds/round_(\d+)/ticket\.safetensors", rel):
        return "ticket", int(m.group(1))
    if m := re.fullmatch(r"pool/([^/]+)/target_(\d+)\.safetensors", rel):
        return "pooled", m.group(1), int(m.group(2))
    return None


def lease_file(what: str) -> str:
    """The lease of one piece of work (lease.py): `imp` (the run), `pool.<name>`, `analysis.<name>`,
    `sweep` (in an experiment directory). Present only while a command holds it, or after one died."""
    return f"lease.{what}.json"
