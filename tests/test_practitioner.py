"""The practitioner's path through `mesa-nb`: their own images and model, their mistakes, a full disk, Ctrl-C.

Each case runs the command (in-process `main` or the console script) and asserts its exit status and its one line.
"""
import copy
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import ROOT, run_cli
from test_cli import alive, children, one_line_error, wait_for
from mesa_nb.cli import MIN_PER_CLASS, ZOO_MAX, main
from mesa_nb.data import load_digits
from mesa_nb.models import build_model

NETS = '''
import torch
from torch import nn
from mesa_nb.models import build_model

def small(): return build_model("smallcnn")
def typo(): return 3
def fixed32(): return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 32 * 32, 10))

def to_class0():
    m = build_model("smallcnn")
    with torch.no_grad(): m.head.bias[0] = 50.0                              # every image to class 0: detection always flags it
    return m

def nan_out():
    m = build_model("smallcnn")
    m.register_forward_hook(lambda mod, inp, out: out * float("nan"))   # finite weights, NaN logits
    return m
'''
TINY = ["--detect-steps", "2", "--search-steps", "2", "--bank", "16", "--betas", "0.5", "--check-triggers", "4",
        "--check-images", "8", "--retrain-epochs", "1", "--retrain-batch-size", "32", "--device", "cpu"]


def one_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mesa-nb: error:"), err
    for n in needles: assert n in err[0], err[0]


@pytest.fixture
def mine(tmp_path, monkeypatch):
    "A practitioner's folder: their model code (importable), weights, the digits' test images as an .npz; detection must never start."
    (tmp_path/"practitioner_nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    save_file(build_model("smallcnn").state_dict(), str(tmp_path/"w.safetensors"))
    test = load_digits("test")
    np.savez(tmp_path/"images.npz", images=test.images.numpy(), labels=test.labels.numpy())
    import mesa_nb.defense
    def never(*a, **k): raise AssertionError("detection started: the input should have been refused first")
    monkeypatch.setattr(mesa_nb.defense, "search_classes", never)
    return tmp_path, test


def defend_args(d, *extra, model="practitioner_nets:small", images="images.npz"):
    return ["defend", "--model", model, "--images", str(d/images), "--device", "cpu", "--out", str(d/"out"), *extra]


def image_folder(root, test, classes=range(10), per_class=12) -> Path:
    "The digits as a folder of class sub-folders of PNG files, `digit0/`, `digit1/`, ..."
    for c in classes:
        (root/f"digit{c}").mkdir(parents=True)
        for i, k in enumerate((test.labels == c).nonzero().flatten()[:per_class].tolist()):
            Image.fromarray(test.images[k].permute(1, 2, 0).numpy()).save(root/f"digit{c}"/f"{i:03d}.png")
    return root


# --- 5. a folder of class sub-folders of images ---------------------------------------------------------------------

def odd_size(d): Image.new("RGB", (20, 20)).save(d/"digit3"/"big.png"); return "digit3/big.png is 20x20 pixels but most images are 16x16: give --resize"
def empty_class(d): (d/"digit9").mkdir(); return "class folder", "digit9 holds no images"
def not_an_image(d): (d/"digit2"/"notes.txt").write_text("taken on a Tuesday"); return "digit2/notes.txt is not an image"
def grey_among_rgb(d): Image.new("L", (16, 16)).save(d/"digit4"/"grey.png"); return "digit4/grey.png is grey-scale but most images are RGB: give --rgb"
def stray_file(d): (d/"README.txt").write_text("my images"); return "holds the file README.txt"


@pytest.mark.parametrize("make", [odd_size, empty_class, not_an_image, grey_among_rgb, stray_file])
def test_an_image_folder_with_a_bad_file_is_refused_in_one_line(mine, capsys, make):
    d, test = mine
    folder = image_folder(d/"imgs", test, range(9))
    needles = make(folder)
    assert main(defend_args(d, images="imgs")) == 2
    one_line(capsys, *([needles] if isinstance(needles, str) else needles))


def test_resize_and_rgb_are_for_image_folders_only(mine, capsys):
    d, _ = mine
    assert main(defend_args(d, "--resize")) == 2
    one_line(capsys, "--resize and --rgb apply to --images DIR")


def test_defend_an_image_folder_missing_a_class(tmp_path):
    "Nine class folders for a ten-class model (--num-classes 10), one image of another size (--resize), one grey one (--rgb)."
    (tmp_path/"practitioner_nets.py").write_text(NETS)
    test = load_digits("test")
    folder = image_folder(tmp_path/"imgs", test, range(9), per_class=20)
    Image.fromarray(test.images[0].permute(1, 2, 0).numpy()).resize((24, 24)).save(folder/"digit0"/"big.png")
    Image.fromarray(test.images[1, 0].numpy()).save(folder/"digit1"/"grey.png")            # mode L
    (folder/"digit2"/".DS_Store").write_bytes(b"\0\1")                                      # hidden files are not images
    base = ["defend", "--model", "practitioner_nets:small", "--images", "imgs", "--resize", "--rgb", "--out", "out", *TINY]
    one_line_error(run_cli(*base, cwd=tmp_path), "the model gives 10 outputs per image, but the class count is 9 (the class folders): give --num-classes 10")
    r = run_cli(*base, "--num-classes", "10", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "classes: 0 digit0, 1 digit1, 2 digit2, 3 digit3, 4 digit4, 5 digit5, 6 digit6, 7 digit7, 8 digit8" in r.stdout
    rep = json.loads((tmp_path/"out"/"report.json").read_text())
    assert len(rep["detection"]["per_class_asr"]) == 10
    assert rep["settings"]["held_images"] + rep["settings"]["search_images"] == 9 * 20 + 2


# --- 6. the model and the images, checked with one forward pass before detection ------------------------------------

def test_the_factory_is_imported_from_the_working_folder(tmp_path):
    (tmp_path/"practitioner_nets.py").write_text(NETS)                  # not on PYTHONPATH: found because it is right here
    one_line_error(run_cli("defend", "--model", "practitioner_nets:typo", "--dataset", "digits", "--out", "out", cwd=tmp_path),
                   "practitioner_nets:typo returned int, not a torch.nn.Module")


def nan_weights(d):
    w = build_model("smallcnn").state_dict(); w["head.weight"][0, 0] = float("nan")
    save_file(w, str(d/"nan.safetensors"))
    return ["--weights", str(d/"nan.safetensors")], "practitioner_nets:small", "the model's weights hold NaN or infinite values (head.weight)"


@pytest.mark.parametrize("case", ["model for 32x32 on 16x16", "1-channel images, 3-channel model", "NaN weights", "NaN outputs"])
def test_a_model_that_cannot_take_the_images_is_refused_before_detection(mine, capsys, case):
    d, test = mine
    np.savez(d/"grey.npz", images=test.images[:, :1].numpy(), labels=test.labels.numpy())
    extra, model, message = {
        "model for 32x32 on 16x16": ([], "practitioner_nets:fixed32", "the model cannot take the defender's images (3 channels, 16x16): RuntimeError: mat1 and mat2"),
        "1-channel images, 3-channel model": (["--images", str(d/"grey.npz")], "practitioner_nets:small",
                                              "the model cannot take the defender's images (1 channel, 16x16): RuntimeError: Given groups=1"),
        "NaN weights": nan_weights(d),
        "NaN outputs": ([], "practitioner_nets:nan_out", "the model gives NaN or infinite outputs on the defender's images"),
    }[case]
    assert main(defend_args(d, model=model)[:-2] + ["--out", str(d/"out"), *extra]) == 2
    one_line(capsys, message)


def test_labels_and_the_class_count(mine, capsys):
    d, test = mine
    x, y = test.images.numpy(), test.labels.numpy()
    y999 = y.copy(); y999[5] = 999
    np.savez(d/"y999.npz", images=x, labels=y999)
    assert main(defend_args(d, images="y999.npz")) == 2
    one_line(capsys, "labels out of range: the model gives 10 outputs, so labels must lie in [0, 10)", "y999.npz has label 999")
    assert main(defend_args(d, "--num-classes", "8")) == 2
    one_line(capsys, "labels out of range: --num-classes 8 needs labels in [0, 8)", "images.npz has label 9")
    no9 = y != 9                                                        # a defender whose images miss the last class
    np.savez(d/"no9.npz", images=x[no9], labels=y[no9])
    assert main(defend_args(d, images="no9.npz")) == 2
    one_line(capsys, "the model gives 10 outputs per image, but the class count is 9 (the largest label + 1): give --num-classes 10")
    assert main(defend_args(d, "--num-classes", "1")) == 2
    one_line(capsys, "--num-classes must be an integer >= 2; got 1")


def test_too_few_images_per_class(mine, capsys):
    d, test = mine
    np.savez(d/"five.npz", images=test.images[:5].numpy(), labels=np.arange(5))
    assert main(defend_args(d, "--num-classes", "10", images="five.npz")) == 2
    one_line(capsys, f"class 0 has 1 image(s) in", f"at least {MIN_PER_CLASS} of each class")


def scripted_weights(d):
    torch.jit.trace(build_model("smallcnn").eval(), torch.zeros(1, 3, 16, 16)).save(str(d/"scripted.pt"))
    return "scripted.pt", "scripted.pt is a TorchScript archive (a whole compiled model), not a state dict of tensors"


def pickled_weights(d):
    torch.save(build_model("smallcnn"), d/"pickled.pt")
    return "pickled.pt", "pickled.pt holds pickled objects, not only tensors (mesa_nb.models.SmallCNN"


@pytest.mark.parametrize("make", [scripted_weights, pickled_weights])
def test_a_whole_model_as_weights_is_refused_in_one_clean_line(tmp_path, make):
    (tmp_path/"practitioner_nets.py").write_text(NETS)
    name, message = make(tmp_path)
    r = run_cli("defend", "--model", "practitioner_nets:small", "--weights", name, "--dataset", "digits", "--out", "out", cwd=tmp_path)
    one_line_error(r, message, "save it with safetensors.torch.save_file(model.state_dict(), path)")   # no torch warning before it
    assert "\x1b" not in r.stderr and "Weights only load failed" not in r.stderr


# --- 6. zoo settings checked first ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--zoo-seed", "99999999999999999999"], "--zoo-seed must be an integer in [0, 4294967) (its models are seeded 1000 × zoo seed + i); got 99999999999999999999"),
    (["--zoo-seed", "-1"], "--zoo-seed must be an integer in [0, 4294967) (its models are seeded 1000 × zoo seed + i); got -1"),
    (["--clean", "200000"], f"--clean must be an integer from 1 to {ZOO_MAX}; got 200000"),
    (["--backdoored", "0"], f"--backdoored must be an integer from 1 to {ZOO_MAX}; got 0"),
    (["--backdoors", "6"], "--backdoors must be an integer from 1 to 5 (detection flags at most half the classes); got 6"),
    (["--backdoors", "0"], "--backdoors must be an integer from 1 to 5 (detection flags at most half the classes); got 0"),
])
def test_zoo_counts_and_seed_are_checked_before_any_work(tmp_path, capsys, monkeypatch, args, message):
    import mesa_nb.cli
    def never(*a, **k): raise AssertionError("the zoo was planned: the settings should have been refused first")
    monkeypatch.setattr(mesa_nb.cli, "zoo_plan", never)
    assert main(["zoo", "--preset", "smoke", "--out", str(tmp_path/"never"), "--no-progress", *args]) == 2
    one_line(capsys, message)
    (tmp_path/"a-file").write_text("x")                                  # --out is checked first of all
    assert main(["zoo", "--preset", "smoke", "--out", str(tmp_path/"a-file"), "--no-progress", *args]) == 2
    one_line(capsys, "a-file is a file: give a folder")
    assert not (tmp_path/"never").exists()


# --- 6. a full disk, and Ctrl-C -------------------------------------------------------------------------------------

LIMIT = 64 * 1024          # bytes that fit on the small disk


@pytest.fixture(params=["tmpfs", "file size limit"])
def small_disk(request, tmp_path):
    "(folder, preexec): a disk that is full after 64 KiB. A real tmpfs of that size where mounting is allowed (root): writes fail with ENOSPC; else a file-size limit on the command's processes (RLIMIT_FSIZE): writes past it fail with EFBIG."
    d = tmp_path/"small"; d.mkdir()
    if request.param == "tmpfs":
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={LIMIT // 1024}k", "tmpfs", str(d)], capture_output=True).returncode:
            pytest.skip("mounting a small tmpfs needs root")
        try: yield d, None
        finally: subprocess.run(["umount", "-l", str(d)], capture_output=True)
    else:
        yield d, lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def cli(*args, cwd=None, preexec=None, timeout=600):
    exe = Path(sys.executable).with_name("mesa-nb")
    return subprocess.run([str(exe), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec)


def disk_full_line(r, *needles):
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mesa-nb: error: the disk is full ("), r.stderr[-3000:]
    assert "No space left on device" in lines[0] or "File too large" in lines[0], lines[0]
    for n in needles: assert n in lines[0], lines[0]


def test_defend_on_a_full_disk(tmp_path, small_disk):
    d, preexec = small_disk
    (tmp_path/"practitioner_nets.py").write_text(NETS)
    test = load_digits("test")
    np.savez(tmp_path/"images.npz", images=test.images.numpy(), labels=test.labels.numpy())
    # a model that detection always flags, so a repair is written (a random one may flag nothing, and its small report fits)
    r = cli("defend", "--model", "practitioner_nets:to_class0", "--images", "images.npz", "--out", d/"out", *TINY, cwd=tmp_path, preexec=preexec)
    disk_full_line(r, str(d/"out"), "free space or give --out on another disk")
    assert list((d/"out").iterdir()) == []                              # nothing half-written left behind


def big_notebook(path):
    "The run template's parameters, then a cell whose output makes the executed notebook larger than the disk."
    import nbformat
    from mesa_nb.batch import template
    nb = nbformat.read(template("run"), as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells = nb.cells[:i + 1] + [nbformat.v4.new_code_cell(f"print('x' * {4 * LIMIT})")]
    nbformat.write(nb, path)
    return path


def test_run_on_a_full_disk_leaves_no_half_written_notebook(tmp_path, small_disk):
    d, preexec = small_disk
    r = cli("run", "--preset", "smoke", "--device", "cpu", "--notebook", big_notebook(tmp_path/"big.ipynb"), "--out", d/"runs", preexec=preexec)
    disk_full_line(r, "free space or give --out on another disk")
    run = d/"runs"/"digits-smallcnn-170-t0-s0"
    for nb in run.glob("*ipynb*"): json.loads(nb.read_text())           # whole, or not there at all
    assert not [p.name for p in run.iterdir() if "ipynb" in p.name and p.name != "run.ipynb"]   # no temporary notebook left
    assert not (run/"metrics.json").exists()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_ctrl_c_on_run_says_how_to_resume(tmp_path):
    exe = Path(sys.executable).with_name("mesa-nb")
    args = ["run", "--preset", "smoke", "--device", "cpu", "--out", tmp_path]
    p = subprocess.Popen([str(exe), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    run = tmp_path/"digits-smallcnn-170-t0-s0"
    try:
        wait_for(lambda: (run/"config.json").is_file(), 300, "the run's kernel to start working")
        kernels = children(p.pid)
        os.killpg(p.pid, signal.SIGINT)                                 # Ctrl-C in a terminal: SIGINT to the foreground process group
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, err
    assert err.strip().splitlines() == ["mesa-nb: interrupted; rerun to resume"]
    assert kernels and not any(alive(k) for k in kernels)               # its kernel stopped with it
    assert not (run/"metrics.json").exists() and not [p.name for p in run.iterdir() if "ipynb" in p.name and p.name != "run.ipynb"]
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "finished earlier" not in again.stdout and (run/"metrics.json").is_file()
