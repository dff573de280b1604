"""Notebooks: every one opens as a percent-format script and comes back with its cells and tags intact."""
import json
from pathlib import Path

import jupytext
import nbformat
import pytest

from conftest import ROOT

NOTEBOOKS = sorted(p for p in (ROOT/"nbs").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
IDS = [str(p.relative_to(ROOT/"nbs")) for p in NOTEBOOKS]


def cells(nb):
    return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in nb.cells]


def test_there_are_notebooks():
    assert {"00_core.ipynb", "01_data.ipynb", "02_models.ipynb", "03_threat.ipynb"} <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_percent_script_round_trip(path):
    nb = nbformat.read(path, as_version=4)
    text = jupytext.writes(nb, fmt="py:percent")
    back = jupytext.reads(text, fmt="py:percent")
    assert cells(back) == cells(nb)
    assert "# %%" in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_clean(path):
    nb = json.loads(path.read_text())
    for c in nb["cells"]:
        assert not c.get("outputs") and c.get("execution_count") is None, f"{path.name} has outputs: run nbdev_clean"
        assert set(c.get("metadata", {})) <= {"tags"}, f"{path.name}: cell metadata {c['metadata']}"


NOTEBOOK_ONLY = {"06_theory.ipynb"}   # the theory checks: their helpers stay in the notebook, nothing is exported


def test_library_notebooks_open_with_default_exp():
    for p in NOTEBOOKS:
        if p.parent.name != "nbs" or p.name.startswith("_") or p.name == "index.ipynb": continue
        if p.name in NOTEBOOK_ONLY:
            assert "default_exp" not in p.read_text() and "#| export" not in p.read_text(), f"{p.name} exports nothing"
            continue
        first = json.loads(p.read_text())["cells"][0]
        assert "".join(first["source"]).startswith("#| default_exp "), f"{p.name} must open with `#| default_exp`"


def test_round_trip_keeps_tags():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Title\n> summary"),
        nbformat.v4.new_code_cell("trigger_id: int = 170  # canonical id", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("#| export\ndef f(): pass"),
        nbformat.v4.new_code_cell("#| slow\nx = 1", metadata={"tags": ["injected-parameters", "slow"]}),
    ])
    back = jupytext.reads(jupytext.writes(nb, fmt="py:percent"), fmt="py:percent")
    assert cells(back) == cells(nb)


TEMPLATES = sorted((ROOT/"nbs"/"experiments").glob("*.ipynb"))


def parameters(path):
    "The parameters cell of a template as {name: (annotation, value)}; asserts it holds annotated literals only."
    import ast
    nb = json.loads(path.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged `parameters`, want exactly one"
    out = {}
    for node in ast.parse("".join(tagged[0]["source"])).body:
        assert isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name), f"{path.name}: `{ast.unparse(node)}` is not `name: type = literal`"
        out[node.target.id] = (ast.unparse(node.annotation), ast.literal_eval(node.value))   # raises on anything but a literal
    return out


def test_templates_exist():
    assert {"run.ipynb", "sweep.ipynb"} <= {p.name for p in TEMPLATES}
    assert {"report.ipynb"} <= {p.name for p in (ROOT/"nbs"/"reports").glob("*.ipynb")}


@pytest.mark.parametrize("path", TEMPLATES + sorted((ROOT/"nbs"/"reports").glob("*.ipynb")), ids=lambda p: p.name)
def test_template_contract(path):
    params = parameters(path)                           # exactly one parameters cell of literals
    assert params, f"{path.name}: empty parameters cell"
    text = path.read_text()
    assert "default_exp" not in text and "#| export" not in text, f"{path.name}: templates export nothing"


def test_run_template_parameters_are_the_run_config():
    from dataclasses import asdict, fields
    from mesa_nb.experiment import RunConfig
    params = parameters(ROOT/"nbs"/"experiments"/"run.ipynb")
    assert list(params) == [f.name for f in fields(RunConfig)]                   # names equal the config's fields
    assert {k: v for k, (_, v) in params.items()} == asdict(RunConfig())          # defaults: the smoke run


def test_imports_point_only_to_earlier_notebooks():
    "The reading order is the dependency order: a module imports only modules of earlier notebooks (no upward arrow, no cycle)."
    import re
    order = {}
    for nb in sorted((ROOT/"nbs").glob("[0-9][0-9]_*.ipynb")):
        m = re.search(r"#\|\s*default_exp\s+(\w+)", nb.read_text(encoding="utf-8"))
        if m: order[m.group(1)] = int(nb.name[:2])
    assert {"core", "mesa", "search", "defense", "batch", "cli"} <= set(order)
    upward = []
    for mod, num in order.items():
        text = (ROOT/"mesa_nb"/f"{mod}.py").read_text(encoding="utf-8")
        for dep in set(re.findall(r"^\s*from \.(\w+) import", text, re.M)) | set(re.findall(r"^\s*from mesa_nb\.(\w+) import", text, re.M)):
            if dep in order and order[dep] >= num: upward.append(f"{mod} ({num:02d}) imports {dep} ({order[dep]:02d})")
    assert not upward, upward
    assert not (ROOT/"mesa_nb"/"theory.py").exists(), "the theory notebook's helpers serve its checks only: nothing installs them"
