"""Look at lp-ray's runs in the MLflow UI as a user does: serve a store with `mlflow server`, open the pages
in headless Chromium, save screenshots. For checking by eye what the MLflow logging looks like after a
change (the review issue's "a regression is seen"); not a test: it needs Chromium (Debian: `apt-get install
chromium`), which CI machines do not have.

    .venv/bin/python tools/mlflow_screens.py sqlite:////abs/path/mlflow.db --out shots/
    .venv/bin/python tools/mlflow_screens.py sqlite:///mlflow.db --experiment lp-ray/default --out shots/

Writes, for the experiment (default: the lp-ray experiment with the most recent run):
    experiment.png   its runs page in the model-training view (the address lp-ray prints)
    sweep.png        the newest sweep run's page (its description and metrics), if there is one
    search.png       the newest search (pool) run's page
    imp.png          the newest IMP run's page
    models.png       the experiment's Models tab (its LoggedModels: tickets and pooled networks)
    model.png        the newest search's best network's page, if it is an MLflow model
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(store: str, port: int, log) -> subprocess.Popen:
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        + ["--backend-store-uri", store],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers too: killed as a group
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except Exception:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("error: mlflow server did not come up in 120 s")


def shoot(chromium: str, url: str, path: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--window-size=1600,1100",
                "--virtual-time-budget=20000",
                f"--screenshot={path}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", help="a tracking URI, e.g. sqlite:////abs/path/mlflow.db")
    ap.add_argument("--experiment", help="the experiment's name (default: the lp-ray one used last)")
    ap.add_argument("--out", default="mlflow-screens")
    a = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        raise SystemExit("error: no Chromium here (Debian: apt-get install chromium)")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(a.store)
    if a.experiment:
        exp = client.get_experiment_by_name(a.experiment)
        if exp is None:
            raise SystemExit(f"error: no experiment {a.experiment!r} in {a.store}")
    else:
        exps = [e for e in client.search_experiments() if e.name.startswith("lp-ray/")]
        if not exps:
            raise SystemExit(f"error: no lp-ray experiment in {a.store}")
        exp = max(exps, key=lambda e: e.last_update_time or 0)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=500)

    def newest(kind: str):
        """The newest run of a kind ("pool:" matches every search)."""
        match = (lambda k: k.startswith(kind)) if kind.endswith(":") else (lambda k: k == kind)
        return next((r for r in runs if match(r.data.tags.get("lp_ray.kind", ""))), None)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with open(out / "server.log", "w") as log:
        proc = serve(a.store, port, log)
        try:
            base = f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}"
            pages = {"experiment": f"{base}/runs?workflowType=machine_learning"}
            for name, kind in (("sweep", "sweep"), ("search", "pool:"), ("imp", "imp")):
                run = newest(kind)
                if run is not None:
                    pages[name] = f"{base}/runs/{run.info.run_id}?workflowType=machine_learning"
            pages["models"] = f"{base}/models?workflowType=machine_learning"
            search = newest("pool:")
            if search is not None and "best_model_id" in search.data.tags:
                pages["model"] = f"{base}/models/{search.data.tags['best_model_id']}?workflowType=machine_learning"
            for name, url in pages.items():
                shoot(chromium, url, out / f"{name}.png")
                print(f"{out / f'{name}.png'}  {url}")
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


if __name__ == "__main__":
    main()
