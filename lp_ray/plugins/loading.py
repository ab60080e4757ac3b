"""Which plugin modules a process imports, importing them, and what identifies their code
(docs/plugins.md).

Only two roads import a user's code: a module the job declares (`plugins: [my_nets]`: the file
`my_nets.py` beside the job, or a module importable by that name), and the entry point of an installed
package whose name the job uses (`lp_ray.models` / `lp_ray.datasets` groups: listing them imports
nothing; only the named one is loaded). A job never names a function to call.

A plugin's identity is what the run hash takes in, and `job.yaml` records, in `plugin_versions`:
`"<module> sha256:<hex>"` for a module of one's own (the sha256 of its file) or
`"<module> from <distribution> <version>"` for an installed package. Every process that builds the
network or loads the data (Ray Train workers, pool evaluators, Tune trials, a later `lp-ray pool`)
activates exactly that code, or fails with one error naming the plugin: tickets of two versions of a
plugin are never mixed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path

from lp_ray.plugins import (
    ENTRY_POINT_GROUPS,
    KINDS,
    REGISTERED,
    DatasetPlugin,
    ModelPlugin,
    PluginError,
)

# Local modules imported by this process: name -> (file, sha256 of its bytes)
_LOCAL: dict[str, tuple[Path, str]] = {}


# --------------------------------------------------------------------------------------------------
# Finding a name


def _entry_points(kind: str) -> dict[str, importlib.metadata.EntryPoint]:
    """The installed packages' entry points of this kind, by name (reading metadata imports nothing)."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUPS[kind])}


def plugin_names(kind: str) -> set[str]:
    """The names plugins offer a job: registered by an imported module, or an installed entry point."""
    return {name for k, name in REGISTERED if k == kind} | set(_entry_points(kind))


def entry_point_package(kind: str, name: str) -> str | None:
    """The installed package whose entry point is named `name`, if one is (reading metadata only)."""
    ep = _entry_points(kind).get(name)
    return None if ep is None else (f"{ep.dist.name} {ep.dist.version}" if ep.dist else ep.value)


def find(kind: str, name: str) -> ModelPlugin | DatasetPlugin | None:
    """The plugin registered as `name` (loading the installed entry point of that name if needed), or
    None. Callers look a name up among the built-in ones first."""
    if (kind, name) in REGISTERED:
        return REGISTERED[kind, name]
    ep = _entry_points(kind).get(name)
    if ep is None:
        return None
    dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "an installed package"
    _import(ep.module, f"entry point {name!r} of {dist} ({ENTRY_POINT_GROUPS[kind]})")
    if (kind, name) not in REGISTERED:
        raise PluginError(
            f"entry point {name!r} of {dist} loaded {ep.module}, which registers no {kind} named {name!r} "
            f"(use lp_ray.plugins.register_{kind}({name!r}))"
        )
    return REGISTERED[kind, name]


# --------------------------------------------------------------------------------------------------
# Importing a job's declared modules


def import_declared(names: Iterable[str], search_dirs: Iterable[Path], where: str) -> None:
    """Import each module a job declares: `<dir>/<name>.py` in the first of `search_dirs` that has it
    (the job file's folder; the working directory for a job that has no file), else a module importable
    by that name. A file
    that changed since this process imported it is imported again (a notebook editing its plugin)."""
    dirs = [Path(d) for d in search_dirs]
    for name in names:
        if not name.isidentifier():
            raise PluginError(f"{where}: plugins: {name!r} is not a module name (a file my_nets.py is 'my_nets')")
        path = next((d / f"{name}.py" for d in dirs if (d / f"{name}.py").is_file()), None)
        if path is not None:
            load_file(name, path, where)
        elif name not in _LOCAL and name not in sys.modules:
            spec = _find_spec(name)
            if spec is None:
                looked = ", ".join(str(d) for d in dirs) or "no folder"
                raise PluginError(f"{where}: plugins: no module {name!r} ({name}.py not in {looked}, nor importable)")
            _import(name, f"plugin module {name!r}")


def load_file(name: str, path: Path, where: str = "") -> None:
    """Import the file `path` as module `name` (again if its bytes changed since)."""
    data = _read(path, where)
    sha = hashlib.sha256(data).hexdigest()
    if _LOCAL.get(name, (None, None))[1] == sha and name in sys.modules:
        return
    forget(name)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        exec(compile(data, str(path), "exec"), module.__dict__)
    except PluginError:
        forget(name)
        raise
    except BaseException as e:  # its own bug: one line naming the file, never a traceback
        forget(name)
        raise PluginError(f"plugin module {name!r} ({path}) failed to import: {_one_line(e)}") from None
    _LOCAL[name] = (path, sha)


def _read(path: Path, where: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise PluginError(f"{where or path}: cannot read plugin {path}: {e.strerror or e}") from None


def forget(name: str) -> None:
    """Drop a module and what it registered (before importing it again, or after it failed)."""
    sys.modules.pop(name, None)
    _LOCAL.pop(name, None)
    for key in [k for k, p in REGISTERED.items() if p.module == name or p.module.startswith(name + ".")]:
        del REGISTERED[key]


def _find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _import(module: str, what: str) -> None:
    try:
        importlib.import_module(module)
    except PluginError:
        raise
    except BaseException as e:
        for key in [k for k, p in REGISTERED.items() if p.module == module]:
            del REGISTERED[key]
        raise PluginError(f"{what} failed to import {module}: {_one_line(e)}") from None


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# --------------------------------------------------------------------------------------------------
# Identity


def identity(plugin: ModelPlugin | DatasetPlugin) -> str:
    """What identifies the plugin's code: `<module> sha256:<hex>` for a module of one's own (its file),
    `<module> from <distribution> <version>` for a module of an installed package."""
    module = plugin.module
    if module in _LOCAL:
        return f"{module} sha256:{_LOCAL[module][1]}"
    dist = _distribution_of(module)
    if dist is not None:
        return f"{module} from {dist}"
    # Imported by name but part of no installed package (on PYTHONPATH, or shipped by Ray): its file.
    mod = sys.modules.get(module)
    path = Path(getattr(mod, "__file__", "") or "")
    if not path.is_file() or path.name == "__init__.py":
        raise PluginError(
            f"plugin module {module!r} is a package folder of no installed distribution: install it "
            "(pip install -e) and declare an entry point, or make it one file"
        )
    _LOCAL[module] = (path, hashlib.sha256(path.read_bytes()).hexdigest())
    return f"{module} sha256:{_LOCAL[module][1]}"


def _distribution_of(module: str) -> str | None:
    top = module.split(".")[0]
    if top not in _top_level_distributions():  # installed since it was read (a notebook's pip install)?
        _top_level_distributions.cache_clear()
    for dist_name in _top_level_distributions().get(top, []):
        try:
            return f"{dist_name} {importlib.metadata.version(dist_name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@functools.cache
def _top_level_distributions() -> dict[str, list[str]]:
    """Top-level module -> the installed distributions providing it: read once per process (it walks
    every installed package's metadata, and identities are asked for on every job a process loads)."""
    return importlib.metadata.packages_distributions()


def key(kind: str, name: str) -> str:
    """plugin_versions' key of a name: `model resnet20`, `dataset my_npz`."""
    return f"{kind} {name}"


def versions_of(kinds_names: Iterable[tuple[str, str]]) -> dict[str, str]:
    """plugin_versions for the plugin names among `kinds_names` (built-in names are left out)."""
    out = {}
    for kind, name in kinds_names:
        plugin = find(kind, name)
        if plugin is not None:
            out[key(kind, name)] = identity(plugin)
    return out


def local_sources(versions: dict[str, str]) -> dict[str, Path]:
    """The files of the modules of one's own that `versions` names: what goes to the run directory and,
    through Ray's runtime environment (py_modules), to every worker."""
    out = {}
    for ident in versions.values():
        module, _, rest = ident.partition(" ")
        if rest.startswith("sha256:") and module in _LOCAL:
            out[module] = _LOCAL[module][0]
    return out


# --------------------------------------------------------------------------------------------------
# On every process that computes: the job's exact plugin code


def activate(versions: dict[str, str], snapshot_dirs: Iterable[Path] = ()) -> None:
    """Make sure this process runs exactly the plugin code `versions` names: a module already imported
    with that identity; else, for a module of one's own, the module importable by its name (Ray ships
    it to workers) or the run directory's copy (in `snapshot_dirs`), whichever has the recorded sha256; for
    an installed package, its entry point at the recorded version. Anything else is one error."""
    for k, ident in versions.items():
        kind, _, name = k.partition(" ")
        if kind not in KINDS or not name:
            raise PluginError(f"plugin_versions: {k!r} is not '<model|dataset> <name>'")
        plugin = REGISTERED.get((kind, name))
        if plugin is not None and identity(plugin) == ident:
            continue
        module, _, rest = ident.partition(" ")
        if rest.startswith("sha256:"):
            _activate_local(kind, name, module, rest.removeprefix("sha256:"), list(snapshot_dirs))
        elif rest.startswith("from "):
            _activate_package(kind, name, module, rest.removeprefix("from "))
        else:
            raise PluginError(
                f"plugin_versions: {k}: {ident!r} is neither '<module> sha256:<hex>' nor '<module> from <package> <version>'"
            )
        plugin = REGISTERED.get((kind, name))
        if plugin is None:
            raise PluginError(f"plugin module {module!r} ({ident}) registers no {kind} named {name!r}")


def _activate_local(kind: str, name: str, module: str, sha: str, snapshot_dirs: list[Path]) -> None:
    candidates = []
    spec = _find_spec(module) if module not in _LOCAL else None
    if spec is not None and spec.origin and spec.origin.endswith(".py"):
        candidates.append(Path(spec.origin))
    candidates += [Path(d) / f"{module}.py" for d in snapshot_dirs]
    seen = []
    for path in candidates:
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest == sha:
                load_file(module, path)
                return
            seen.append(f"{path} is sha256:{digest[:12]}…")
    if module in _LOCAL:
        seen.append(f"the one imported here ({_LOCAL[module][0]}) is sha256:{_LOCAL[module][1][:12]}…")
    raise PluginError(
        f"{kind} {name!r} was made with plugin module {module!r} sha256:{sha[:12]}…, which is not here "
        f"({'; '.join(seen) or 'no copy found'}): restore that file, or start a new run"
    )


def _activate_package(kind: str, name: str, module: str, dist: str) -> None:
    dist_name, _, version = dist.rpartition(" ")
    try:
        here = importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        here = None
    if here != version:
        has = f"has {dist_name} {here}" if here else f"does not have {dist_name}"
        raise PluginError(
            f"{kind} {name!r} needs {dist_name} {version} installed on every Ray node; this one {has} "
            "(install it in every node's environment or image, as on this machine)"
        )
    _import(module, f"{kind} {name!r} ({dist})")
