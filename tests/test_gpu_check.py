"""The GPU check's preparation: its CIFAR-10 subset (written compressed, read by the project's loader) and its answer on a
machine without a GPU (exit 2 at once, nothing installed, nothing run)."""
import lzma
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from mesa_nb.data import CIFAR, load_cifar

sys.path.insert(0, str(ROOT/"scripts"))
import gpu_data  # noqa: E402  (scripts/gpu_data.py)

CHECK = ROOT/"scripts"/"gpu_check.sh"


def fake_cifar10(root, per_batch=100, seed=0):
    "A CIFAR-10 folder in the original layout (protocol-2 pickles): five training batches and a test batch of random images."
    d = root/"cifar-10-batches-py"; d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in CIFAR["cifar10"]["train"] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": (np.arange(per_batch) % 10).tolist()}
        (d/name).write_bytes(pickle.dumps(batch, protocol=2))
    (d/"batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}, protocol=2))
    return root


def rows(ds) -> set:
    "Each image's pixels and label, as a set."
    return {(bytes(x), int(y)) for x, y in zip(ds.images.reshape(len(ds), -1).numpy(), ds.labels.numpy())}


def test_subset_is_compressed_and_read_by_the_loader(tmp_path):
    src = fake_cifar10(tmp_path/"src")
    assert gpu_data.main(["--src", str(src), "--out", str(tmp_path/"out"), "--train", "100", "--test", "50"]) == 0
    folder = tmp_path/"out"/"cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir()) == ["batches.meta", *[f"{n}.xz" for n in CIFAR["cifar10"]["train"]], "test_batch.xz"]
    with lzma.open(folder/"test_batch.xz") as f: assert pickle.load(f)[b"data"].shape == (50, 3072)   # a real xz file
    train, test = load_cifar("cifar10", "train", tmp_path/"out"), load_cifar("cifar10", "test", tmp_path/"out")
    assert (len(train), len(test)) == (100, 50) and train.classes == [f"c{i}" for i in range(10)]
    assert np.bincount(train.labels.numpy()).tolist() == [10] * 10 and np.bincount(test.labels.numpy()).tolist() == [5] * 10
    assert rows(train) <= rows(load_cifar("cifar10", "train", src)) and rows(test) <= rows(load_cifar("cifar10", "test", src))
    assert len(rows(train)) == 100                                           # no image twice
    # over the size allowed: an error that says what to do, and the earlier subset left whole
    assert gpu_data.main(["--src", str(src), "--out", str(tmp_path/"out"), "--train", "150", "--max-bytes", "1000"]) == 2
    assert len(load_cifar("cifar10", "train", tmp_path/"out")) == 100
    assert [p.name for p in (tmp_path/"out").iterdir() if p.name.startswith(".")] == []
    assert gpu_data.main(["--src", str(src), "--out", str(tmp_path/"o2"), "--train", "120"]) == 2     # not 10 classes x 5 files


def recorder(path, name, body="exit 0"):
    "An executable `name` in `path` that notes each call in calls.txt."
    exe = path/name
    exe.write_text(f"#!/bin/sh\necho {name} \"$@\" >> {path/'calls.txt'}\n{body}\n"); exe.chmod(0o755)
    return exe


@pytest.mark.parametrize("smi, why", [
    (None, "not found"),
    ('echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver." >&2; exit 9', "-L failed: NVIDIA-SMI has failed"),
    ("exit 0", "lists none"),
])
def test_without_a_gpu_it_stops_at_once(tmp_path, smi, why):
    smi_exe = recorder(tmp_path, "nvidia-smi", smi) if smi else tmp_path/"absent"/"nvidia-smi"
    python = recorder(tmp_path, "python", "exit 0")                         # would note any install or step
    env = {**os.environ, "OUT": str(tmp_path/"out"), "GPU_CHECK_NVIDIA_SMI": str(smi_exe), "GPU_CHECK_PYTHON": str(python),
           "TMPDIR": str(tmp_path/"tmp")}
    env.pop("GPU_CHECK_ALLOW_CPU", None)
    (tmp_path/"tmp").mkdir()
    r = subprocess.run(["bash", str(CHECK)], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("no CUDA device: this check needs a GPU (") and why in r.stderr
    assert why in (tmp_path/"out"/"summary.md").read_text()
    calls = (tmp_path/"calls.txt").read_text().split("\n") if (tmp_path/"calls.txt").exists() else []
    assert not any(c.startswith("python") for c in calls)                   # no install, no step ran
    assert list((tmp_path/"tmp").iterdir()) == []                           # no work folder made
    assert sorted(p.name for p in (tmp_path/"out").iterdir()) == ["summary.md"]
