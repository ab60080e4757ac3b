"""lp-ray: Lottery Pools (Yin et al., AAAI 2023) on Ray: IMP with rewinding, then greedy ticket pooling.

`import lp_ray` gives the Python API (lp_ray/api.py, docs/api.md): `lp_ray.run(...)`, `lp_ray.imp(...)`,
`lp_ray.pool(...)`, `lp_ray.open_run(...)`, ... They are imported on first use, so `import lp_ray`
stays light (no torch, Ray or MLflow until a command needs them)."""

from lp_ray.errors import LpRayError

__version__ = "0.1.0"

API = (
    "load_job",
    "load_cluster",
    "imp",
    "pool",
    "report",
    "run",
    "sweep",
    "analyze",
    "evaluate",
    "import_tickets",
    "register",
    "tickets",
    "open_run",
    "shutdown",
    "Run",
    "RunResult",
    "TicketRow",
)
__all__ = ["LpRayError", "__version__", *API]


def __getattr__(name: str):
    if name in API:
        from lp_ray import api

        return getattr(api, name)
    raise AttributeError(f"module 'lp_ray' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
