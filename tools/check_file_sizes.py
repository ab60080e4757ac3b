"""Refuse large files in git: data sets, checkpoints, MLflow artifacts and venvs are outputs, not source.

Run by `make lint` (so by `make test` and CI). Checks every file git tracks or would add (untracked and
not ignored); outside a git checkout there is nothing to check.
"""

from __future__ import annotations

import os
import subprocess
import sys

LIMIT_BYTES = 1024 * 1024  # the largest source file today is ~20 KB; 1 MiB leaves room for a small fixture


def candidate_files() -> list[str] | None:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], capture_output=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return [p for p in out.stdout.decode().split("\0") if p]


def main() -> int:
    files = candidate_files()
    if files is None:
        print("check_file_sizes: not a git checkout; nothing to check")
        return 0
    big = [(p, os.path.getsize(p)) for p in files if os.path.isfile(p) and os.path.getsize(p) > LIMIT_BYTES]
    for path, size in big:
        print(
            f"error: {path} is {size / 2**20:.1f} MiB (limit {LIMIT_BYTES / 2**20:.0f} MiB): outputs and data stay out of git",
            file=sys.stderr,
        )
    return 1 if big else 0


if __name__ == "__main__":
    sys.exit(main())
