"""Shared fixtures: the repository root, real CIFAR-10 when present, a fast CLI runner."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cifar10_root():
    "The folder holding cifar-10-batches-py: $MESA_NB_DATA, else a sibling shared/data checkout."
    for cand in (os.environ.get("MESA_NB_DATA"), ROOT.parent/"shared"/"data"):
        if cand and (Path(cand)/"cifar-10-batches-py"/"test_batch").is_file(): return Path(cand)
    return None


@pytest.fixture
def cifar_root():
    root = cifar10_root()
    if root is None: pytest.skip("CIFAR-10 not present (set MESA_NB_DATA to the folder holding cifar-10-batches-py)")
    return root


def run_cli(*args, cwd=None, timeout=600, env=None):
    "Run the installed `mesa-nb` command; returns the CompletedProcess."
    exe = Path(sys.executable).with_name("mesa-nb")
    e = {**os.environ, **(env or {})}
    return subprocess.run([str(exe), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=e)
