"""Pool speed benchmark (not a test): what a search costs next to the IMP that made its tickets, for
several search settings side by side on the same finished runs, in one run.

For each run directory and setting it runs the whole search (every target, the Ray executor at the
default parallelism, `--parallel-evals 2`) into pool/bench-<setting>/ and reports:

  compute   the search's evaluations' seconds summed (its trace) / IMP's training seconds summed (the
            rounds' meta.json): the issue's "0.94x" measure; and the recalibration examples summed
            (bn_examples, a count that machine load cannot move) / an exact search's
  wall      the search's wall time / IMP's (sum of its rounds' wall times)
  gain      the search's mean test gain over LT (pt) and sparsities better, for a first look (the
            experiment, experiments/fast-search.yaml, is where the gain is measured over seeds)

Runs of several models (e.g. the default job's BatchNorm CNN and jobs/mnist1d-vit.yaml's transformer,
whose evaluations recalibrate nothing) are summarized per model, side by side.

   .venv/bin/python benchmarks/pool_speed.py RUN_DIR [RUN_DIR ...]
   .venv/bin/python benchmarks/pool_speed.py RUN_DIR --setting exact: --setting fast:search=fast \\
       --setting fast-all:search=fast,search_num=10      # NAME:FIELD=VALUE,... (pool fields, YAML values)
   .venv/bin/python benchmarks/pool_speed.py RUN_DIR --throughput    # also evaluations/s at 1 vs 2 in parallel
   .venv/bin/python benchmarks/pool_speed.py CNN_RUN VIT_RUN --setting exact:   # with and without BatchNorm
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lp_ray.pool.command import run_pool  # noqa: E402
from lp_ray.pool.records import read_trace  # noqa: E402
from lp_ray.spec import ClusterSpec, PoolSpec  # noqa: E402
from lp_ray.spec_loading import pool_variant  # noqa: E402
from lp_ray.store import RunDir, finished_rounds, read_job, read_ticket_meta  # noqa: E402

DEFAULT_SETTINGS = ("exact:", "fast:search=fast")


def parse_setting(text: str) -> tuple[str, dict]:
    name, _, fields = text.partition(":")
    out = {}
    for part in filter(None, fields.split(",")):
        key, _, value = part.partition("=")
        out[key.strip()] = yaml.safe_load(value)
    return name, out


def measure(run_uri: str, name: str, fields: dict, cluster: ClusterSpec) -> dict:
    run = RunDir(run_uri)
    settings = pool_variant(read_job(run).pool, fields, f"--setting {name}")
    out = run_pool(run_uri, settings, cluster, None, name=f"bench-{name}", parallel_evals=2, overwrite=True)
    trace = read_trace(run, f"bench-{name}")
    gains = [r.gain for r in out.results.values()]
    return {
        "evaluations": len(trace),
        "eval_seconds": sum(r["seconds"] for r in trace),
        "bn_examples": sum(r.get("bn_examples") or 0 for r in trace),
        "wall_seconds": out.seconds,
        "mean_gain_pt": 100 * statistics.mean(gains),
        "better": sum(g > 0 for g in gains),
        "targets": len(gains),
    }


def throughput(run_uri: str, cluster: ClusterSpec) -> dict[int, float]:
    """Evaluations/s at 1 and 2 in flight (targets 3 and 6, exact), alternating, medians of two each."""
    rates: dict[int, list[float]] = {}
    for p in (1, 2, 1, 2):
        out = run_pool(
            run_uri, PoolSpec(targets=[3, 6]), cluster, None, name=f"bench-speed-p{p}", parallel_evals=p, overwrite=True
        )
        rates.setdefault(p, []).append(out.evaluations / out.seconds)
    return {p: statistics.median(r) for p, r in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", nargs="+")
    ap.add_argument("--setting", action="append", help="NAME:FIELD=VALUE,... (default: exact and fast)")
    ap.add_argument("--throughput", action="store_true", help="also evaluations/s at 1 vs 2 in parallel")
    a = ap.parse_args()
    settings = [parse_setting(s) for s in (a.setting or DEFAULT_SETTINGS)]
    cluster = ClusterSpec()
    results: dict[str, list[dict]] = {name: [] for name, _ in settings}
    imp, models = [], []
    for uri in a.run_dirs:
        run = RunDir(uri)
        imp.append(sum(read_ticket_meta(run, r).seconds for r in finished_rounds(run)))
        models.append(read_job(run).model.name)
        for name, fields in settings:
            results[name].append(measure(uri, name, fields, cluster))
            m = results[name][-1]
            print(
                f"{uri}  {name}: {m['evaluations']} evaluations, {m['eval_seconds']:.1f} s summed, "
                f"{m['wall_seconds']:.1f} s wall; IMP {imp[-1]:.1f} s",
                flush=True,
            )
    print()
    # One summary per model: a network without BatchNorm (vit) and one with it (conv1d) side by side.
    for model in dict.fromkeys(models):
        runs = [i for i, m in enumerate(models) if m == model]
        print(
            f"{model}: IMP training, summed over rounds: median {statistics.median(imp[i] for i in runs):.1f} s over {len(runs)} run(s)"
        )
        reference = results[settings[0][0]]
        for name, rows in results.items():
            compute = [rows[i]["eval_seconds"] / imp[i] for i in runs]
            wall = [rows[i]["wall_seconds"] / imp[i] for i in runs]
            per_eval = [rows[i]["eval_seconds"] / rows[i]["evaluations"] for i in runs]
            if all(reference[i]["bn_examples"] for i in runs):
                ratio = statistics.median(rows[i]["bn_examples"] / reference[i]["bn_examples"] for i in runs)
                examples = f"recalibration examples {ratio:.3f}x {settings[0][0]}'s"
            else:
                examples = "no BatchNorm: nothing recalibrated"
            print(
                f"{name:>12}: compute {statistics.median(compute):.3f}x IMP (evaluations' seconds summed), wall "
                f"{statistics.median(wall):.3f}x IMP; {statistics.median(rows[i]['evaluations'] for i in runs):.0f} "
                f"evaluations of {1000 * statistics.median(per_eval):.0f} ms, {examples}; "
                f"mean gain {statistics.mean(rows[i]['mean_gain_pt'] for i in runs):+.2f} pt (medians over {len(runs)} run(s))"
            )
        print()
    if a.throughput:
        rates = throughput(a.run_dirs[0], cluster)
        print(f"evaluations/s: 1 in parallel {rates[1]:.2f}, 2 in parallel {rates[2]:.2f}: {rates[2] / rates[1]:.2f}x")
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "pool_speed.json").write_text(json.dumps({"imp_seconds": imp, "settings": results}, indent=2))


if __name__ == "__main__":
    main()
