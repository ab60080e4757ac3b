"""Ctrl-C is recorded as well as raised, so a KeyboardInterrupt that some library swallows still stops
a long command at its next wait-loop check."""

import os
import signal
import time

import pytest

from lp_ray import interrupt


def _ctrl_c_swallowed_by_a_library() -> bool:
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler runs here at the latest
    except BaseException:  # what a broad `except`, a __del__ or a callback does to it
        return True
    return False


def test_a_swallowed_ctrl_c_is_raised_again_by_check():
    before = signal.getsignal(signal.SIGINT)
    with interrupt.recorded_sigint():
        interrupt.check()  # nothing pressed yet: no exception
        assert _ctrl_c_swallowed_by_a_library()
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        with pytest.raises(KeyboardInterrupt):  # and it stays raised for every later check
            interrupt.check()
    assert signal.getsignal(signal.SIGINT) is before


def test_a_new_command_starts_without_an_old_ctrl_c():
    with interrupt.recorded_sigint():
        assert _ctrl_c_swallowed_by_a_library()
    with interrupt.recorded_sigint():
        interrupt.check()


def test_a_ctrl_c_swallowed_in_a_commands_last_steps_still_ends_it_with_130():
    # e.g. during pool's final MLflow logging: the command body returns normally, the exit must not be 0
    import subprocess
    import sys

    script = """
import os, signal, sys, time
from lp_ray import cli

@cli.app.command("swallow")
@cli.interruptible
def swallow():
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    except KeyboardInterrupt:
        pass  # what a library's broad `except` would do
    print("finished the work")

sys.exit(cli.run_cli(["swallow"]))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "finished the work" in proc.stdout
    assert proc.returncode == 130, proc.stdout + proc.stderr
    assert proc.stderr.strip() == "interrupted: finished work is kept; rerun the same command to resume"
