"""Bad input and faults get one clear line (status 2) before any work; nothing a user made is mixed or lost."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mesa_nb.data import load_digits
from mesa_nb.models import build_model
from mesa_nb.record import SCHEMA_VERSION
from mesa_nb.cli import main
from test_cli import record


def one_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mesa-nb: error:"), err
    for n in needles: assert n in err[0], err[0]


# --- report: a record that is not one is refused, naming the file ---------------------------------------------

def good(): return record(170, 0.95, 0.02, [0.03, 0.02, 0.01, 0.02], [0.1, 0.5], 0.01)


def bad_records():
    r = good(); r["detection"]["per_class_asr"][3] = "high"; yield "a string ASR", json.dumps(r), "detection.per_class_asr"
    r = good(); del r["clean"]; yield "a missing key", json.dumps(r), "is not a RunRecord: clean is missing; delete it or rerun that run"
    r = good(); r["trigger"]["target"] = 99; yield "a target of 99", json.dumps(r), "trigger.target must be a class in [0, 10); got 99"
    r = good(); r["defense"]["mesa"]["0.5"]["asr"] = "low"; yield "a string metric", json.dumps(r), "defense.mesa.0.5.asr must be a number; got 'low'"
    r = good(); r["defense"]["baseline"]["runs"][1]["accuracy"] = 1.2; yield "an accuracy above 1", json.dumps(r), "defense.baseline.runs[1].accuracy must be a rate in [0, 1]"
    r = good(); r["defense"]["robust"] = {}; yield "a foreign field", json.dumps(r), "defense.robust is not a field of Defenses"
    r = good(); r["version"] = 7; yield "a newer version", json.dumps(r), f"a run record of version 7, newer than this mesa_nb reads ({SCHEMA_VERSION}): upgrade mesa_nb"
    yield "NaN", json.dumps(good()).replace('"asr": 0.99', '"asr": NaN'), "NaN is not a number JSON allows"
    yield "a list", "[1, 2]", "is not a RunRecord: it must be an object; got [1, 2]"
    yield "deep nesting", "[" * 100_000 + "]" * 100_000, "RecursionError"


@pytest.mark.parametrize("what, text, message", list(bad_records()), ids=[c[0] for c in bad_records()])
def test_report_refuses_what_is_not_a_record(tmp_path, capsys, what, text, message):
    (tmp_path/"a").mkdir(); (tmp_path/"a"/"metrics.json").write_text(json.dumps(good()))
    (tmp_path/"b").mkdir(); (tmp_path/"b"/"metrics.json").write_text(text)
    assert main(["report", str(tmp_path)]) == 2
    one_line(capsys, str(tmp_path/"b"/"metrics.json"), message)
    assert not (tmp_path/"report.md").exists()


def test_report_on_bytes_a_folder_a_list_and_a_file(tmp_path, capsys):
    (tmp_path/"a").mkdir(); (tmp_path/"a"/"metrics.json").write_bytes(b'{"dataset": "\xff"}')
    assert main(["report", str(tmp_path)]) == 2; one_line(capsys, "a/metrics.json is not valid JSON (UnicodeDecodeError")
    (tmp_path/"a"/"metrics.json").write_text(json.dumps(good()))
    (tmp_path/"f").mkdir(); (tmp_path/"f"/"failed.json").write_text("[1]")
    assert main(["report", str(tmp_path)]) == 2; one_line(capsys, "f/failed.json is not a failure record")
    (tmp_path/"f"/"failed.json").write_text(json.dumps({"error": "ValueError: boom"}))
    (tmp_path/"out").write_text("a file")
    assert main(["report", str(tmp_path), "--out", str(tmp_path/"out")]) == 2; one_line(capsys, "out is a file")
    (tmp_path/"report.md").mkdir()
    assert main(["report", str(tmp_path)]) == 2; one_line(capsys, "report.md is a folder")


def test_report_lists_failures_when_nothing_finished(tmp_path, capsys):
    (tmp_path/"r").mkdir(); (tmp_path/"r"/"failed.json").write_text(json.dumps({"error": "NonFiniteError: loss is nan"}))
    assert main(["report", str(tmp_path)]) == 2
    one_line(capsys, "no finished runs", "1 failed: r: NonFiniteError: loss is nan")


def test_report_never_pools_datasets_or_models(tmp_path, capsys):
    a, b = good(), good()
    b.update(dataset="cifar10", model="resnet18"); b["attack"]["asr"] = 0.5
    for n, r in (("a", a), ("b", b)): (tmp_path/n).mkdir(); (tmp_path/n/"metrics.json").write_text(json.dumps(r))
    assert main(["report", str(tmp_path)]) == 0
    md = (tmp_path/"report.md").read_text()
    assert "### cifar10 / resnet18" in md and "### digits / smallcnn" in md
    assert "50.0 %–50.0 %" in md and "99.0 %–99.0 %" in md                # each attack on its own, not 50.0–99.0 pooled


# --- defend: every input checked before detection starts; outputs written as one set ---------------------------

@pytest.fixture
def user(tmp_path, monkeypatch):
    "A user's model code and files: a factory module on the path, weights, images."
    (tmp_path/"suspect_net.py").write_text(
        "from mesa_nb.models import build_model\n"
        "def make(): return build_model('smallcnn')\n"
        "def boom(): raise RuntimeError('no GPU driver')\n"
        "def needs(width): return build_model('smallcnn', width=width)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    save_file(build_model("smallcnn").state_dict(), str(tmp_path/"w.safetensors"))
    save_file(build_model("smallcnn", num_classes=5).state_dict(), str(tmp_path/"w5.safetensors"))
    (tmp_path/"garbage.safetensors").write_bytes(os.urandom(256))
    test = load_digits("test")
    np.savez(tmp_path/"images.npz", images=test.images.numpy(), labels=test.labels.numpy())
    import mesa_nb.defense
    def never(*a, **k): raise AssertionError("detection started: the input should have been refused first")
    monkeypatch.setattr(mesa_nb.defense, "search_classes", never)
    return tmp_path, test


def defend_args(d, *extra, model="suspect_net:make", weights="w.safetensors", images="images.npz"):
    return ["defend", "--model", model, "--weights", str(d/weights), "--images", str(d/images), "--device", "cpu", "--out", str(d/"out"), *extra]


def npz(d, name, **arrays): np.savez(d/name, **arrays); return name


@pytest.mark.parametrize("case", ["raises", "needs args", "garbage weights", "wrong shapes", "empty npz", "object array", "negative labels",
                                  "float labels", "trigger size 0", "trigger too big", "mean nan", "mean alone", "classes twice",
                                  "betas 1.5", "threshold 2", "alpha -1", "out is a file", "out holds other files"])
def test_defend_refuses_bad_input_before_detection(user, capsys, case):
    d, test = user
    x, y = test.images.numpy(), test.labels.numpy()
    def file_out(): (d/"out").write_text("x"); return defend_args(d)
    def busy_out(): (d/"out").mkdir(); (d/"out"/"thesis.tex").write_text("x"); return defend_args(d)
    make, message = {
        "raises": (lambda: defend_args(d, model="suspect_net:boom"), "suspect_net:boom() failed (RuntimeError: no GPU driver)"),
        "needs args": (lambda: defend_args(d, model="suspect_net:needs"), "the factory must build the model with no arguments"),
        "garbage weights": (lambda: defend_args(d, weights="garbage.safetensors"), "garbage.safetensors is not a readable state dict"),
        "wrong shapes": (lambda: defend_args(d, weights="w5.safetensors"), "size mismatch for head.weight"),
        "empty npz": (lambda: defend_args(d, images=npz(d, "e.npz")), "e.npz holds []; it needs arrays 'images' and 'labels'"),
        "object array": (lambda: defend_args(d, images=npz(d, "o.npz", images=np.array([None, 1], dtype=object), labels=y)),
                         "o.npz is not a readable .npz"),
        "negative labels": (lambda: defend_args(d, images=npz(d, "n.npz", images=x, labels=y - 1)), "must be class indices >= 0; got -1"),
        "float labels": (lambda: defend_args(d, images=npz(d, "f.npz", images=x, labels=y + 0.5)),
                         "must be integer class indices; got dtype float64 with non-integer values"),
        "trigger size 0": (lambda: defend_args(d, "--trigger-size", "0"), "trigger of size 0x0 does not fit the 16x16 images: use a size from 1x1 to 16x16"),
        "trigger too big": (lambda: defend_args(d, "--trigger-size", "17"), "trigger of size 17x17 does not fit the 16x16 images: use a size from 1x1 to 16x16"),
        "mean nan": (lambda: defend_args(d, "--mean", "nan", "--std", "0.3"), "mean must be finite numbers"),
        "mean alone": (lambda: defend_args(d, "--mean", "0.5"), "both --mean and --std, or neither"),
        "classes twice": (lambda: defend_args(d, "--classes", "6", "6"), "classes to repair [6, 6] repeat a class"),
        "betas 1.5": (lambda: defend_args(d, "--betas", "0.5", "1.5"), "setting betas (--betas) must be levels in (0, 1); got [0.5, 1.5]"),
        "threshold 2": (lambda: defend_args(d, "--threshold", "2"), "setting threshold (--threshold) must be a mean ASR in (0, 1); got 2.0"),
        "alpha -1": (lambda: defend_args(d, "--alpha", "-1"), "setting alpha (--alpha) must be a number >= 0; got -1.0"),
        "out is a file": (file_out, "is a file: give a folder"),
        "out holds other files": (busy_out, "holds files that no defense wrote (thesis.tex)"),
    }[case]
    assert main(make()) == 2
    one_line(capsys, message)
    assert not (d/"out"/"report.json").exists()


def test_templates_never_come_from_the_working_directory(tmp_path, monkeypatch):
    from conftest import ROOT
    from mesa_nb.batch import template
    for d in (tmp_path/"nbs"/"experiments", tmp_path/"experiments"):
        d.mkdir(parents=True); (d/"run.ipynb").write_text('{"cells": [{"cell_type": "code", "source": "import os; os.system(\'touch pwned\')"}]}')
    monkeypatch.chdir(tmp_path); monkeypatch.delenv("MESA_NB_TEMPLATES", raising=False)
    assert template("run") == ROOT/"nbs"/"experiments"/"run.ipynb"


def test_a_wheel_ships_the_templates_and_runs_only_those(tmp_path):
    "A non-editable install finds run, sweep and report inside the package, never a checkout or the working folder."
    import shutil, subprocess, sys, zipfile
    from conftest import ROOT
    src = tmp_path/"src"                                   # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT/"mesa_nb", src/"mesa_nb", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT/"nbs", src/"nbs", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for f in ("setup.py", "pyproject.toml", "settings.ini", "README.md", "MANIFEST.in"): shutil.copy2(ROOT/f, src/f)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src), "-w", str(tmp_path/"w")],
                   check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = (tmp_path/"w").glob("mesa_nb-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"mesa_nb/templates/run.ipynb", "mesa_nb/templates/sweep.ipynb", "mesa_nb/templates/report.ipynb"} <= set(names)
    assert not [n for n in names if n.startswith("mesa_nb/templates/") and not n.endswith(".ipynb")], "only notebooks ship"
    zipfile.ZipFile(wheel).extractall(tmp_path/"site")
    (tmp_path/"nbs"/"experiments").mkdir(parents=True)
    (tmp_path/"nbs"/"experiments"/"run.ipynb").write_text("{}")                     # a look-alike in the working folder
    env = {k: v for k, v in os.environ.items() if k != "MESA_NB_TEMPLATES"} | {"PYTHONPATH": str(tmp_path/"site")}
    out = subprocess.run([sys.executable, "-c", "from mesa_nb.batch import template; print(template('run')); print(template('report'))"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, check=True).stdout.split()
    assert out == [str(tmp_path/"site"/"mesa_nb"/"templates"/"run.ipynb"), str(tmp_path/"site"/"mesa_nb"/"templates"/"report.ipynb")]
    assert (tmp_path/"site"/"mesa_nb"/"templates"/"run.ipynb").read_bytes() == (ROOT/"nbs"/"experiments"/"run.ipynb").read_bytes()


def test_a_truncated_cached_clean_model_says_which_file_to_delete(tmp_path):
    from mesa_nb.core import MesaError
    from mesa_nb.experiment import clean_model, clean_path, make_config
    cfg = make_config("smoke", out_dir=str(tmp_path), device="cpu")
    path = clean_path(cfg, tmp_path)
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\"")              # a write cut short
    with pytest.raises(MesaError, match=f"{path.name} is not a readable safetensors file .*cached clean model .*delete it"):
        clean_model(cfg, load_digits("train"), tmp_path, log=lambda *a: None)


@pytest.mark.parametrize("cmd", ["run", "batch"])
def test_run_and_batch_refuse_an_out_that_is_a_file(tmp_path, capsys, cmd):
    (tmp_path/"afile").write_text("mine")
    assert main([cmd, "--preset", "smoke", "--device", "cpu", "--out", str(tmp_path/"afile")]) == 2
    one_line(capsys, "afile is a file: give a folder")
    assert (tmp_path/"afile").read_text() == "mine"
