"""The README's entry points, end to end: `mesa-nb demo`, `run`, `batch` (killed and resumed), `report`, `defend`, bad input."""
import json
import re
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from mesa_nb.record import SCHEMA_VERSION, RunRecord
from mesa_nb.models import native_bf16


def read_record(path) -> RunRecord:
    "A run's record read as every reader reads it (every field's type and range checked), with what every run has."
    rec = RunRecord.read(path)
    assert json.loads(Path(path).read_text())["version"] == rec.version == SCHEMA_VERSION
    assert len(rec.detection.per_class_asr) == 10 and rec.detection.threshold == 0.5
    assert rec.timing["total"] > 0 and rec.environment["torch"]
    return rec


def test_demo_main_job(tmp_path):
    r = run_cli("demo", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = tmp_path/"outputs"/"demo"/"digits-smallcnn-170-t0-s0"
    m = read_record(run/"metrics.json")
    assert m.trigger.id == 170 and m.trigger.pattern[0] == [[0, 1, 0], [1, 0, 1], [0, 1, 0]]
    # a serious attack, found by detection, and removed by MESA and by the ideal without wrecking accuracy
    assert m.attack.asr >= 0.9 and m.attack.accuracy >= m.clean.accuracy - 0.02 >= 0.9
    assert m.detection.flagged == [0]
    assert m.defense.mesa["ensemble"].asr <= 0.1 and m.defense.ideal.asr <= 0.1
    assert m.defense.mesa["ensemble"].accuracy >= m.attack.accuracy - 0.1
    assert len(m.defense.baseline.runs) == 5
    for f in ("run.ipynb", "detection.png", "triggers.png", "embedding.png", "curves.png", "backdoored.safetensors", "repaired.safetensors"):
        assert (run/f).is_file(), f
    nb = json.loads((run/"run.ipynb").read_text())
    assert any(c.get("outputs") for c in nb["cells"])                    # the executed notebook, with its outputs
    assert "| after MESA ensemble |" in r.stdout and "flagged [0]" in r.stdout
    # the README shows exactly what the demo prints (it runs on two threads everywhere, so its numbers are the same)
    printed = r.stdout[r.stdout.index("| | clean accuracy"):r.stdout.index("\n\nrun folder:")]
    readme = (ROOT/"README.md").read_text(encoding="utf-8")
    shown = readme[readme.index("| | clean accuracy"):]
    shown = shown[:shown.index("\n```")]
    assert same_table(printed, shown), "the README's demo table is not what `make demo` prints: paste the printed table into the README"


NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def same_table(printed: str, shown: str) -> bool:
    "The same rows, columns and words; in the table, each number within two held-out digits (3.2 points, 0.07 ASR) of the other."
    skeleton = lambda t: NUMBER.sub("#", t)
    if skeleton(printed) != skeleton(shown): return False
    rows = lambda t: [n for line in t.splitlines() if line.startswith("|") for n in NUMBER.findall(line)]
    for a, b in zip(rows(printed), rows(shown)):
        tol = 0.07 if len(a.partition(".")[2]) == 2 else 3.2     # two decimals: an ASR in [0, 1]; one: percent or points
        if abs(float(a) - float(b)) > tol + 1e-9: return False
    return True


def test_run_end_to_end_and_settings_guard(tmp_path):
    args = ["run", "--preset", "smoke", "--trigger", "color:3", "--device", "cpu", "--out", tmp_path]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "without encryption" not in r.stderr                         # the kernel talks over local IPC sockets
    run = tmp_path/"digits-smallcnn-color3-t0-s0"
    rec = read_record(run/"metrics.json")
    assert rec.trigger.kind == "color" and len(rec.trigger.pattern) == 3 and rec.preset == "smoke"
    assert list(rec.defense.methods()) == ["MESA β=0.5", "MESA β=0.8", "MESA β=0.9", "MESA ensemble", "MESA chosen", "baseline", "ideal"]
    assert len(rec.defense.baseline.runs) == 2 and rec.defense.chosen in rec.defense.mesa
    assert rec.version == SCHEMA_VERSION and rec.family.groups == {"black-and-white": 512, "colour": 512} and rec.recipe["ratio"] == 0.05
    assert len(rec.clean.surface.asr) == 1024 and rec.defense.ideal.surface.excess_max is not None   # every model's surface, over the clean one
    assert (run/"surface.png").is_file() and "surface: the ASR of 1024 triggers" in r.stdout
    assert json.loads((run/"config.json").read_text())["trigger"] == "color:3"
    assert rec.environment["training_arithmetic"] == "float32"                # the smoke preset trains in float32 on a CPU
    again = run_cli(*args, "--bf16")                                          # bf16 is how a run computes, like --device: not redone
    assert again.returncode == 0 and "finished earlier, not redone" in again.stdout
    assert RunRecord.read(run/"metrics.json") == rec
    other = run_cli(*args, "--alpha", "1")
    assert other.returncode == 2 and "finished run with other settings (alpha: 0.1 there, 1.0 now)" in other.stderr



def test_a_blended_trigger_end_to_end_with_masks(tmp_path):
    r = run_cli("run", "--preset", "smoke", "--trigger", "blend:2:.2", "--device", "cpu", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    rec = read_record(tmp_path/"digits-smallcnn-blend2-0.2-t0-s0"/"metrics.json")
    assert rec.trigger.kind == "blend" and rec.trigger.name == "blend:2:0.2" and rec.trigger.label == "blend:2:0.2"
    assert len(rec.trigger.pattern[0]) == 16 and {round(v, 6) for row in rec.trigger.mask for v in row} == {0.2}   # full-image pattern, constant opacity
    assert len(rec.detection.per_class_area) == 10                      # a blend is always defended with masks: the size is not told
    assert all(len(run.pattern) == 4 for run in rec.defense.baseline.runs)   # the baseline reverses a pattern and a mask too
    settings = json.loads((tmp_path/"digits-smallcnn-blend2-0.2-t0-s0"/"config.json").read_text())
    assert settings["blend_area"] == 4.0 and set(rec.defense.mesa) == {"0.5", "0.8", "0.9", "ensemble"}   # one candidate per level, both mask forms in each
    # the run's removal search made again and retrained on each mask form's bank (scripts/removal_banks.py)
    banks = subprocess.run([sys.executable, str(ROOT/"scripts"/"removal_banks.py"), str(tmp_path/"digits-smallcnn-blend2-0.2-t0-s0"), "--seeds", "0"],
                           capture_output=True, text=True, timeout=600)
    assert banks.returncode == 0, banks.stderr
    assert "valid pixel β=0.5" in banks.stdout and "blend β=0.9" in banks.stdout           # both forms at every level
    rows = [l for l in banks.stdout.splitlines() if l.startswith("| ") and "%" in l]
    assert [r.split(" | ")[0] for r in rows] == ["| pixel masks", "| blends", "| both forms", "| both forms, β=0.9"]
    assert rec.attack.asr is not None and rec.defense.ideal.asr is not None


def cifar_subset(root, dest, per_file=100, test=400):
    "A CIFAR-10 folder holding the first images of each real batch file (read with the restricted unpickler)."
    import pickle
    from mesa_nb.data import read_pickle
    src, out = Path(root)/"cifar-10-batches-py", Path(dest)/"cifar-10-batches-py"
    out.mkdir(parents=True)
    (out/"batches.meta").write_bytes((src/"batches.meta").read_bytes())
    for name, n in [(f"data_batch_{i}", per_file) for i in range(1, 6)] + [("test_batch", test)]:
        d = read_pickle(src/name)
        (out/name).write_bytes(pickle.dumps({b"data": d[b"data"][:n], b"labels": list(d[b"labels"][:n])}, protocol=2))
    return Path(dest)


def test_paper_preset_end_to_end_on_a_cifar_subset(cifar_root, tmp_path):
    "The paper's protocol (ResNet-18, its objective, SGD without extras), every stage, on 500 + 400 real images and tiny step counts."
    data = cifar_subset(cifar_root, tmp_path/"data")
    tiny = ["--clean-epochs", "1", "--attack-epochs", "1", "--detect-steps", "2", "--search-steps", "2", "--search-batch", "16",
            "--bank", "64", "--check-triggers", "4", "--check-images", "8", "--retrain-epochs", "1", "--baseline-runs", "1",
            "--reverse-epochs", "1", "--surface-images", "1"]
    r = run_cli("run", "--preset", "paper", "--data-dir", data, "--device", "cpu", "--out", tmp_path/"runs", *tiny)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path/"runs"/"cifar10-resnet18-170-t0-s0"
    cfg = json.loads((run/"config.json").read_text())
    assert (cfg["preset"], cfg["model"], cfg["objective"], cfg["ratio"], cfg["attack_schedule"]) == ("paper", "resnet18", "paper", 0.01, "constant")
    assert (cfg["weight_decay"], cfg["nesterov"], cfg["augmentation"], cfg["label_smoothing"]) == (0.0, False, False, 0.0)
    rec = read_record(run/"metrics.json")
    assert rec.model == "resnet18" and rec.preset == "paper"
    assert rec.defense.ideal is not None and len(rec.defense.baseline.runs) == 1 and set(rec.defense.mesa) == {"0.5", "0.8", "0.9", "ensemble"}
    assert {"attack", "detection", "mesa", "baseline", "ideal"} <= rec.timing.keys()
    from mesa_nb.models import load_model
    assert type(load_model(run/"repaired.safetensors", "cpu")).__name__ == "ResNet18"

def test_batch_killed_midway_resumes_with_every_run_once(tmp_path):
    exe = Path(sys.executable).with_name("mesa-nb")
    args = [str(exe), "batch", "--preset", "smoke", "--trigger", "0", "170", "color:1", "none", "--device", "cpu",
            "--out", str(tmp_path), "--no-progress"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 400
    while time.time() < deadline and not list(tmp_path.glob("*/metrics.json")): time.sleep(0.5)
    os.killpg(p.pid, signal.SIGKILL); p.wait()                         # the driver, its kernels, everything
    first = list(tmp_path.glob("*/metrics.json"))
    assert 1 <= len(first) < 4, "kill the batch after its first run and before the last"
    stamps = {f: f.stat().st_mtime_ns for f in first}
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    names = {"digits-smallcnn-0-t0-s0", "digits-smallcnn-170-t0-s0", "digits-smallcnn-color1-t0-s0", "digits-smallcnn-none-t0-s0"}
    assert {f.parent.name for f in tmp_path.glob("*/metrics.json")} == names            # every run present, once
    assert {d.name for d in tmp_path.iterdir() if d.is_dir()} == names
    assert all(f.stat().st_mtime_ns == t for f, t in stamps.items())                     # finished runs not redone
    assert f"{len(first)} run(s) finished earlier, skipped" in r.stdout + r.stderr
    assert f"{4 - len(first)} run(s) done, {len(first)} skipped, 0 failed" in r.stdout
    assert (tmp_path/"report.md").is_file() and len(list(tmp_path.glob("clean-*.safetensors"))) == 1


def test_batch_records_a_failed_run_and_goes_on(tmp_path):
    from mesa_nb.experiment import make_config
    from mesa_nb.report import failures
    from mesa_nb.batch import batch
    ok = make_config("smoke", trigger="none", out_dir=str(tmp_path), device="cpu")
    bad = make_config("smoke", trigger="170", out_dir=str(tmp_path), device="cpu", search_batch=5000)   # more than the images
    res = batch([bad, ok], progress=False, log=lambda *a: None)
    assert res["done"] == ["digits-smallcnn-none-t0-s0"]
    (name, err), = res["failed"]
    assert name == "digits-smallcnn-170-t0-s0" and "fewer than one batch of 5000" in err
    assert failures(tmp_path)[0]["error"] == err and not (tmp_path/name/"metrics.json").exists()


def record(trigger, target_asr, other, mesa, base, ideal, seed=0):
    "A run record as `record.RunRecord` describes it, made by hand."
    per = [other] * 10
    if trigger is not None: per[0] = target_asr
    rec = dict(dataset="digits", model="smallcnn", seed=seed, clean=dict(accuracy=0.97), timing=dict(total=10.0), environment={},
               trigger=None if trigger is None else dict(kind="canonical", id=trigger, name=f"canonical:{trigger}", target=0, location="random", pattern=[]),
               attack=dict(accuracy=0.96) if trigger is None else dict(accuracy=0.96, asr=0.99),
               detection=dict(per_class_asr=per, threshold=0.5, flagged=[0] if target_asr > 0.5 and trigger is not None else []))
    rec["defense"] = {"mesa": {}} if trigger is None else dict(
        mesa={b: dict(accuracy=0.95, asr=a) for b, a in zip(["0.5", "0.8", "0.9", "ensemble"], mesa)},
        baseline=dict(runs=[dict(accuracy=0.94, asr=a) for a in base], asr_mean=sum(base) / len(base),
                      asr_std=0.0, asr_max=max(base)), ideal=dict(accuracy=0.96, asr=ideal))
    return rec


def test_report_aggregates_records(tmp_path):
    recs = {"a": record(170, 0.95, 0.02, [0.03, 0.02, 0.01, 0.02], [0.1, 0.5], 0.01),
            "b": record(7, 0.90, 0.05, [0.09, 0.04, 0.05, 0.03], [0.02, 0.04], 0.02),
            "c": record(None, 0.0, 0.04, [], [], 0.0)}
    for name, rec in recs.items():
        (tmp_path/name).mkdir(); (tmp_path/name/"metrics.json").write_text(json.dumps(rec))
    r = run_cli("report", tmp_path)
    assert r.returncode == 0, r.stderr
    md = (tmp_path/"report.md").read_text()
    assert "2 backdoored run(s) and 1 clean control(s)" in md
    assert "| after-defense ASR, MESA ensemble | mean 2.5 %, worst 3.0 % (canonical:7)" in md
    assert "| after-defense ASR, baseline | mean of per-trigger means 16.5 %, worst 50.0 % (canonical:170)" in md
    assert "| detection | target ≥ 90.0 %, others ≤ 5.0 %; 2/2 flagged exactly the target" in md
    assert "| clean controls | highest class 4.0 %; 1/1 flagged nothing" in md
    import pandas as pd
    df = pd.read_csv(tmp_path/"report.csv")
    assert len(df) == 3 and math.isclose(df.set_index("run").loc["a", "margin"], 0.93, abs_tol=1e-4)
    assert (tmp_path/"after_defense.png").stat().st_size > 0 and (tmp_path/"detection_matrix.png").is_file()
    (tmp_path/"b"/"metrics.json").write_text("{ not json")
    bad = run_cli("report", tmp_path)
    assert bad.returncode == 2 and "b/metrics.json is not valid JSON" in bad.stderr


def test_defend_a_users_model(tmp_path):
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from mesa_nb.data import load_digits
    from mesa_nb.models import build_model, fit
    from mesa_nb.cli import load_user_model
    from mesa_nb.threat import backdoor, canonical_trigger
    torch.manual_seed(0)
    train, test = load_digits("train"), load_digits("test")
    model = build_model("smallcnn"); fit(model, train, epochs=8, lr=0.05, device="cpu")
    backdoor(model, train, canonical_trigger(170, 0), ratio=0.1, epochs=8, lr=0.02, schedule="onecycle", device="cpu")
    (tmp_path/"suspect_net.py").write_text("from mesa_nb.models import build_model\ndef make(): return build_model('smallcnn')\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path/"suspect.safetensors"))
    np.savez(tmp_path/"images.npz", images=test.images.permute(0, 2, 3, 1).numpy(), labels=test.labels.numpy())   # (N, H, W, C)
    env = {"PYTHONPATH": str(tmp_path)}
    r = run_cli("defend", "--model", "suspect_net:make", "--weights", tmp_path/"suspect.safetensors", "--images", tmp_path/"images.npz",
                "--mean", *test.mean, "--std", *test.std, "--detect-steps", "60", "--search-steps", "60", "--search-batch", "32",
                "--retrain-ratio", "0.05", "--retrain-epochs", "4", "--retrain-lr", "0.01", "--retrain-batch-size", "64",
                "--betas", "0.5", "0.9", "--ensemble", "entropy", "--choose", "surface", "--device", "cpu", "--out", tmp_path/"out", env=env)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path/"out"/"report.json").read_text())
    assert rep["detection"]["flagged"] == [0] and rep["choice"]["0"] in rep["mesa"]["0"] and "lowest residual surface" in rep["chosen"]
    assert rep["environment"]["training_arithmetic"] == "float32"                 # without --bf16: float32 on a CPU
    before, after = rep["before"]["0"]["surface"], rep["mesa"]["0"][rep["choice"]["0"]]["surface"]   # the evidence without the original trigger
    assert len(before["asr"]) == 1024 and before["above_05"] > 0.3 and after["above_05"] < before["above_05"] / 4
    assert "class 0 before repair" in r.stdout and (tmp_path/"out"/"surface-class0.png").is_file()
    assert rep["settings"]["ensemble"] == "entropy" and sorted(rep["mesa"]["0"]) == ["0.5", "0.9", "ensemble"]
    from mesa_nb.defense import DefenseReport
    back = DefenseReport.from_json(rep, "report.json")                  # the file reads back as the typed report, checked
    assert back.flagged == [0] and back.mesa["0"]["ensemble"].sampled_asr == rep["mesa"]["0"]["ensemble"]["sampled_asr"]
    assert (tmp_path/"out"/"repaired.safetensors").is_file()
    assert (tmp_path/"out"/"detection.png").is_file() and (tmp_path/"out"/"triggers-class0.png").is_file()
    again = run_cli("defend", "--model", "suspect_net:make", "--weights", tmp_path/"suspect.safetensors", "--images", tmp_path/"images.npz",
                    "--mean", *test.mean, "--std", *test.std, "--detect-steps", "20", "--search-steps", "10", "--search-batch", "32", "--classes", "3",
                    "--betas", "0.5", "--retrain-epochs", "1", "--trigger-size", "unknown", "--device", "cpu", "--bf16", "--out", tmp_path/"out", env=env)   # the same folder, class 3 now, masks, in bf16 where native; the default choice
    assert again.returncode == 0, again.stderr
    rep = json.loads((tmp_path/"out"/"report.json").read_text())
    assert rep["chosen"] == "ensemble of class 3" and rep["settings"]["trigger_shape"] == [4, 16, 16]   # pattern and opacity over the image
    assert rep["environment"]["training_arithmetic"] == ("bf16 autocast" if native_bf16("cpu") else "float32")   # --bf16 reached defend
    assert rep["family"]["kind"] == "size unknown" and "blend 0.1" in rep["family"]["groups"]             # squares of every side and blends
    assert len(rep["detection"]["per_class_area"]) == 10 and "their mean opacity" in again.stdout
    assert sorted(p.name for p in (tmp_path/"out").iterdir()) == ["detection.png", "repaired.safetensors", "report.json", "surface-class3.png", "triggers-class3.png"]
    bad = run_cli("defend", "--model", "suspect_net:nothing", "--weights", tmp_path/"suspect.safetensors", "--images", tmp_path/"images.npz",
                  "--out", tmp_path/"never", env=env)
    assert bad.returncode == 2 and "cannot import 'suspect_net:nothing'" in bad.stderr
    torch.save(model, tmp_path/"pickled.pt")                             # a whole pickled model, not a state dict: refused
    bad = run_cli("defend", "--model", "suspect_net:make", "--weights", tmp_path/"pickled.pt", "--images", tmp_path/"images.npz",
                  "--out", tmp_path/"never", env=env)
    assert bad.returncode == 2 and "is not a readable state dict" in bad.stderr
    bad = run_cli("defend", "--model", "suspect_net:make", "--weights", tmp_path/"suspect.safetensors", "--images", tmp_path/"images.npz",
                  "--classes", "12", "--out", tmp_path/"never", env=env)
    assert bad.returncode == 2 and "classes to repair [12] must lie in [0, 10)" in bad.stderr
    bad = run_cli("defend", "--model", "suspect_net:make", "--weights", tmp_path/"suspect.safetensors", "--images", tmp_path/"images.npz",
                  "--choose", "0.7", "--out", tmp_path/"never", env=env)
    assert bad.returncode == 2 and "setting choose (--choose) must be one of ('surface', 'ensemble') or a level of betas" in bad.stderr
    bad = run_cli("defend", "--model", "suspect_net:make", "--weights", tmp_path/"suspect.safetensors", "--images", tmp_path/"images.npz",
                  "--ensemble", "schedule", "--betas", "0.5", "0.9", "--out", tmp_path/"never", env=env)
    assert bad.returncode == 2 and "schedule weighs betas [0.5, 0.8, 0.9]; got betas [0.5, 0.9]" in bad.stderr


def test_triggers_lists_51():
    r = run_cli("triggers")
    ids = list(map(int, r.stdout.split()))
    assert len(ids) == 51 and ids[:3] == [0, 1, 2] and ids[-1] == 186


def one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mesa-nb: error:"), r.stderr
    for n in needles: assert n in lines[0], lines[0]


def test_bad_cli_input(tmp_path):
    out = ["--out", tmp_path/"never"]
    one_line_error(run_cli("run", "--trigger", "4", *out), "variant of canonical trigger 1")
    one_line_error(run_cli("run", "--trigger", "plus", *out), "unknown trigger 'plus'")
    one_line_error(run_cli("run", "--preset", "fast", *out), "unknown preset 'fast'")
    one_line_error(run_cli("run", "--target", "10", *out), "outside the label range [0, 10)")
    one_line_error(run_cli("run", "--ratio", "1.5", *out), "setting ratio (--ratio) must be a number in [0, 1]; got 1.5")
    one_line_error(run_cli("run", "--dataset", "mnist", *out), "unknown dataset 'mnist'")
    one_line_error(run_cli("run", "--ensemble", "schedule", "--betas", "0.5", "0.9", *out), "schedule weighs betas [0.5, 0.8, 0.9]; got betas [0.5, 0.9]")
    one_line_error(run_cli("run", "--preset", "cpu", "--data-dir", tmp_path/"nothing-here", *out),
                   "cifar10 not found", "cifar-10-batches-py/", str(tmp_path/"nothing-here"))
    one_line_error(run_cli("batch", "--preset", "cpu", "--trigger", "0", "1", "--data-dir", tmp_path/"nothing-here", *out), "cifar10 not found")
    one_line_error(run_cli("batch", "--trigger", "9-3", *out), "empty trigger range '9-3'")
    one_line_error(run_cli("run", "--device", "tpu", *out), "unknown device 'tpu'")
    one_line_error(run_cli("report", tmp_path/"no-such-folder"), "is not a folder")
    one_line_error(run_cli("defend", "--model", tmp_path/"none.pt", "--dataset", "digits", *out), "is not module:factory")
    assert not (tmp_path/"never").exists()
    r = run_cli("run", "--clean-epochs", "two")
    assert r.returncode == 2 and "invalid int value: 'two'" in r.stderr


def test_batch_on_a_dask_local_cluster(tmp_path):
    pytest.importorskip("distributed")
    from mesa_nb.experiment import make_config
    from mesa_nb.batch import batch, plan
    cfgs = plan(make_config("smoke", out_dir=str(tmp_path), device="cpu", baseline_runs=1), ["170", "none"])
    res = batch(cfgs, workers=2, engine="dask", progress=False, log=lambda *a: None)
    assert sorted(res["done"]) == ["digits-smallcnn-170-t0-s0", "digits-smallcnn-none-t0-s0"] and res["failed"] == []
    assert all(json.loads((tmp_path/n/"metrics.json").read_text())["seed"] == 0 for n in res["done"])
    assert sorted(batch(cfgs, engine="dask", progress=False, log=lambda *a: None)["skipped"]) == sorted(res["done"])


@pytest.mark.parametrize("cmd, args, message", [
    ("run", ["--betas", "0"], "setting betas (--betas) must be levels in (0, 1); got [0.0]"),
    ("run", ["--betas", "1.5"], "levels in (0, 1); got [1.5]"),
    ("batch", ["--betas", "nan"], "levels in (0, 1); got [nan]"),
    ("run", ["--betas", "0.8", "0.8"], "repeats a level"),
    ("run", ["--alpha", "-1"], "setting alpha (--alpha) must be a number >= 0; got -1.0"),
    ("run", ["--threshold", "2"], "setting threshold (--threshold) must be a mean ASR in (0, 1)"),
    ("run", ["--search-batch", "0"], "setting search_batch (--search-batch) must be an integer >= 1; got 0"),
    ("run", ["--attack-schedule", "bogus"], "unknown attack_schedule 'bogus'"),
    ("run", ["--seed", "-5"], "setting seed (--seed) must be an integer >= 0; got -5"),
    ("batch", ["--seeds", "0", "-5"], "setting seed (--seed) must be an integer >= 0; got -5"),
    ("run", ["--check-triggers", "0"], "setting check_triggers (--check-triggers) must be an integer >= 1"),
    ("run", ["--bank", "0"], "setting bank (--bank) must be an integer >= 1"),
    ("run", ["--detect-steps", "0"], "setting detect_steps (--detect-steps) must be an integer >= 1"),
    ("run", ["--rounds", "0"], "setting rounds (--rounds) must be an integer >= 1; got 0"),
    ("run", ["--retrain-lr", "inf"], "setting retrain_lr (--retrain-lr) must be a learning rate > 0"),
    ("run", ["--label-smoothing", "1"], "setting label_smoothing (--label-smoothing) must be a number in [0, 1)"),
    ("run", ["--weight-decay", "-0.1"], "setting weight_decay (--weight-decay) must be a number >= 0"),
    ("run", ["--choose", "0.7"], "setting choose (--choose) must be one of ('surface', 'ensemble') or a level of betas ['0.5', '0.8', '0.9']; got '0.7'"),
    ("run", ["--retrain-seeds", "0"], "setting retrain_seeds (--retrain-seeds) must be an integer >= 1"),
    ("run", ["--surface-images", "0"], "setting surface_images (--surface-images) must be an integer >= 1"),
    ("run", ["--retrain-schedule", "bogus"], "unknown retrain_schedule 'bogus'"),
    ("run", ["--surface-family", "squares"], "setting surface_family (--surface-family): unknown trigger family 'squares'"),
    ("run", ["--surface-family", "20x20"], "a family of triggers of size 20x20 does not fit the 16x16 images"),
    ("run", ["--defenses", "ideal", "pruning"], "setting defenses (--defenses) names unknown defense 'pruning': use some of ['baseline', 'finetune', 'ideal']"),
])
def test_every_setting_is_checked_before_any_work(tmp_path, capsys, cmd, args, message):
    from mesa_nb.cli import main
    assert main([cmd, "--preset", "smoke", "--out", str(tmp_path/"never"), "--no-progress" if cmd == "batch" else "--save-models", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mesa-nb: error:") and message in err[0], err
    assert not (tmp_path/"never").exists()                              # nothing made, nothing trained


def test_run_help_explains_every_setting(capsys):
    from mesa_nb.cli import main
    with pytest.raises(SystemExit): main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ["--nesterov, --no-nesterov Nesterov momentum in poisoned fine-tuning and retraining",
                 "--search-batch SEARCH_BATCH triggers per sub-model per search step", "--seed SEED seeds the clean model"]:
        assert text in out, text


def children(pid):
    "The pids of a process's children (Linux /proc)."
    out = set()
    for f in Path(f"/proc/{pid}/task").glob("*/children"):
        try: out |= {int(c) for c in f.read_text().split()}
        except OSError: pass
    return out


def alive(pid):
    try: return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except (OSError, IndexError): return False


def cmdline(pid):
    try: return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
    except OSError: return f"pid {pid} (gone)"


def wait_for(cond, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if cond(): return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_one_process_per_run_folder(tmp_path):
    exe = Path(sys.executable).with_name("mesa-nb")
    args = ["run", "--preset", "smoke", "--device", "cpu", "--out", tmp_path]
    first = subprocess.Popen([str(exe), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        lock = tmp_path/"digits-smallcnn-170-t0-s0"/".lock"
        wait_for(lambda: lock.is_file() and lock.read_text().strip() == str(first.pid), 120, "the first run to take its folder")
        second = run_cli(*args, "--alpha", "1")                       # other settings, same folder, while the first works
        one_line_error(second, "is being run by another process", f"(pid {first.pid})")
        out, err = first.communicate(timeout=600)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None: os.killpg(first.pid, signal.SIGKILL)
    run = lock.parent
    assert json.loads((run/"config.json").read_text())["alpha"] == 0.1                # one run's files, not a mix
    assert json.loads((run/"metrics.json").read_text())["preset"] == "smoke"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_workers_die_with_a_killed_batch(tmp_path):
    exe = Path(sys.executable).with_name("mesa-nb")
    args = [str(exe), "batch", "--preset", "smoke", "--trigger", "0", "1", "2", "3", "5", "--workers", "2", "--device", "cpu",
            "--out", str(tmp_path), "--no-progress"]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: list(tmp_path.glob("*/.lock")) and len(children(p.pid)) >= 2, 300, "the workers to start runs")
        workers = children(p.pid)
        family = workers | {k for w in workers for k in children(w)}          # the workers and their kernels
        os.kill(p.pid, signal.SIGKILL); p.wait()                             # the driver alone
        try: wait_for(lambda: not any(alive(q) for q in family), 90, "the workers and kernels of the killed batch to exit")
        except AssertionError: raise AssertionError(f"still alive 90 s after the batch was killed: {[cmdline(q) for q in family if alive(q)]}")
    finally:
        try: os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError: pass


def test_two_backdoors_in_one_model(tmp_path):
    r = run_cli("run", "--preset", "smoke", "--trigger", "170@0, COLOR:3@5", "--device", "cpu", "--bf16", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    run = tmp_path/"digits-smallcnn-170-t0+color3-t5-s0"
    rec = read_record(run/"metrics.json")
    assert json.loads((run/"config.json").read_text())["bf16"] is True and rec.environment["training_arithmetic"] == (
        "bf16 autocast" if native_bf16("cpu") else "float32")                      # --bf16 reached the run, bf16 where the CPU has it
    assert json.loads((run/"config.json").read_text())["trigger"] == "170@0,color:3@5"
    assert [(t.trigger.label, t.trigger.target) for t in rec.targets] == [("170", 0), ("color:3", 5)]
    assert rec.detection.rule == "pvalue" and rec.detection.flagged == [0, 5]        # the default rule flags both targets (rank order, known size)
    assert all(t.flagged and t.p_value < rec.detection.significance for t in rec.targets)
    first, second = rec.targets
    assert rec.trigger.target == 0 and first.backdoored.asr == rec.attack.asr      # the first trigger is the run's own
    assert first.clean.surface == rec.clean.surface and second.clean.surface.asr != first.clean.surface.asr   # each target its own floor
    for t in rec.targets:                                                           # every row: before and after, over its floor
        assert t.backdoored.surface.excess_max is not None and t.repaired.surface.excess_max is not None
        assert t.repaired.accuracy == first.repaired.accuracy                       # one returned model, judged on each trigger
    assert rec.defense.baseline is None and rec.defense.ideal is None              # defined for one trigger: not run
    assert "returned model: ensemble of class 0, ensemble of class 5" in (run/"run.ipynb").read_text()   # both classes repaired in turn
    assert (run/"surface-t5.png").is_file() and "| color:3 → 5 |" in r.stdout


def test_a_run_repairs_what_detection_flags_round_after_round(tmp_path):
    "--repair-flagged: the run repairs the flagged classes as `defend` does, detects again, and finishes when its target is missed."
    r = run_cli("run", "--preset", "smoke", "--repair-flagged", "--device", "cpu", "--out", tmp_path/"found")
    assert r.returncode == 0, r.stderr
    rec = read_record(tmp_path/"found"/"digits-smallcnn-170-t0-s0"/"metrics.json")
    assert rec.detection.flagged == [0] and len(rec.redetections) >= 1                # class 0 repaired, then detection again on the result
    assert rec.defense.mesa and rec.attack.surface is not None
    r = run_cli("run", "--preset", "smoke", "--repair-flagged", "--significance", "1e-12", "--device", "cpu", "--out", tmp_path/"missed")
    assert r.returncode == 0, r.stderr                                              # the target missed: nothing repaired, the run still complete
    rec = read_record(tmp_path/"missed"/"digits-smallcnn-170-t0-s0"/"metrics.json")
    assert rec.detection.flagged == [] and rec.redetections == [] and rec.defense.mesa == {}
    assert rec.attack.surface is not None and rec.coverage is None and rec.defense.ideal is not None   # the backdoored surface measured by the run itself


@pytest.mark.parametrize("spec, extra, message", [
    ("170@0,color:3@0", [], "share target 0: give each trigger its own class"),
    ("170@0,color:3@12", [], "target class 12 is outside the label range [0, 10)"),
    ("170@0,170@1", [], "are the same pattern: one trigger cannot answer two classes"),
    ("170@0,bw:1:9@1", [], "side must be 2 to 8 pixels"),
    ("170@0,color:3", [], "give each of several triggers its target"),
    ("170@0,color:3@5", ["--ratio", "0.6"], "for each of 2 triggers, 1.2 in all: give at most 0.5")])
def test_a_bad_multi_trigger_spec_is_refused_before_any_work(tmp_path, spec, extra, message):
    r = run_cli("run", "--preset", "smoke", "--trigger", spec, *extra, "--device", "cpu", "--out", tmp_path)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not list(tmp_path.glob("digits-*"))
