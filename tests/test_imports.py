"""Every module imports in a fresh interpreter (an import hidden with `#| hide` passes nbdev_test but breaks users)."""
import configparser
import pkgutil
import subprocess
import sys

import pytest

import mesa_nb
from conftest import ROOT

MODULES = sorted(m.name for m in pkgutil.iter_modules(mesa_nb.__path__) if not m.name.startswith("_"))


def test_expected_modules_exist():
    assert {"core", "data", "models", "threat", "mine", "mesa", "defense", "viz", "experiment", "report", "batch", "cli", "search", "record"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_fresh_import(module):
    code = f"import mesa_nb.{module} as m; assert m.__all__, 'no exports'; [getattr(m, n) for n in m.__all__]"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_version_matches_settings():
    cfg = configparser.ConfigParser(); cfg.read(ROOT/"settings.ini")
    assert mesa_nb.__version__ == cfg["DEFAULT"]["version"]
