"""Progress display. Rank 0 of a training fit pushes small status dicts to a `ProgressBoard` actor; a
thread in the driver polls it and redraws a rich progress view. On a terminal that is a live view;
in logs (CI, `--submit`) only one line per finished stage is printed."""

from __future__ import annotations

import sys
import threading

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# Off a terminal (logs, CI) rich would wrap at 80 columns; a wider fixed width keeps one line per event.
console = Console(
    stderr=False, highlight=False, width=None if sys.stdout.isatty() else 160, soft_wrap=not sys.stdout.isatty()
)


def say(line: str) -> None:
    """One plain line for the user (a lease waited for or taken over), never wrapped or marked up."""
    console.print(line, markup=False, highlight=False)


class ProgressBoard:
    """A tiny Ray actor (created with num_cpus=0) owned by the driver: the last status each writer
    pushed."""

    def __init__(self):
        self.state: dict = {}

    def update(self, status: dict) -> None:
        self.state.update(status)

    def get(self) -> dict:
        return dict(self.state)


def make_board():
    """The board for a live view, or None off a terminal (logs, CI, a sweep's trial): there nobody reads
    it, and it would cost every fit one more Ray actor process and its rank 0 one RPC per step."""
    if not console.is_terminal:
        return None
    import ray

    return ray.remote(num_cpus=0)(ProgressBoard).remote()


def progress_bars() -> Progress:
    """The one look of lp-ray's live views: description, bar, done/total, an info column, elapsed time.
    Off a terminal it is disabled (logs get one line per finished stage instead)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )


class RoundProgress:
    """Round r/R bar plus an epoch/step bar with loss and accuracies, fed from a ProgressBoard."""

    def __init__(self, total_rounds: int, board=None):
        self.board = board
        self.live = console.is_terminal
        self.progress = progress_bars()
        self.rounds = self.progress.add_task("rounds", total=total_rounds, info="")
        self.epoch = self.progress.add_task("epoch", total=1, info="", visible=False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        self.progress.start()
        if self.board is not None and self.live:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        self.progress.stop()

    def _poll(self) -> None:
        import ray

        while not self._stop.wait(0.5):
            try:
                s = ray.get(self.board.get.remote(), timeout=2)
            except Exception:
                continue
            if not s:
                continue
            info = f"loss {s.get('loss', float('nan')):.3f}"
            if "val_acc" in s:
                info += f"  train {100 * s['train_acc']:.1f}%  val {100 * s['val_acc']:.1f}%"
            particle = f" particle {s['particle']}" if "particle" in s else ""
            desc = f"round {s['round']}{particle} epoch {min(s['epoch'] + 1, s['epochs'])}/{s['epochs']}"
            self.progress.update(
                self.epoch, description=desc, completed=s["step"], total=s["steps"], info=info, visible=True
            )

    def round_done(self, line: str) -> None:
        self.progress.advance(self.rounds)
        console.print(line)
