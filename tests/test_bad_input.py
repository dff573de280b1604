"""Every bad input of the foundation gets a MesaError that names the problem and the fix."""
import os
import pickle
import random
import shutil

import numpy as np
import pytest
import torch

from mesa_nb.core import MesaError, read_json, write_json
from mesa_nb.data import ImageSet, load_cifar, load_digits, read_pickle
from mesa_nb.models import build_model, fit, load_weights
from mesa_nb.threat import Trigger, attack_success_rate, backdoor, canonical_trigger, poison, stamp


def write_batch(path, data=None, labels=None, **extra):
    d = {b"data": np.zeros((4, 3072), np.uint8) if data is None else data, b"labels": [0, 1, 2, 3] if labels is None else labels, **extra}
    path.write_bytes(pickle.dumps(d, protocol=2))


@pytest.fixture
def cifar_dir(tmp_path):
    "A tiny, structurally valid CIFAR-10 folder (4 images per file)."
    d = tmp_path/"cifar-10-batches-py"; d.mkdir()
    (d/"batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}, protocol=2))
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]: write_batch(d/f)
    return d


def test_valid_tiny_folder_loads(cifar_dir):
    assert len(load_cifar("cifar10", "train", cifar_dir)) == 20
    assert len(load_cifar("cifar10", "test", cifar_dir.parent)) == 4   # the parent folder works too


def test_missing_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("MESA_NB_DATA", str(tmp_path/"nowhere"))
    with pytest.raises(MesaError, match=r"cifar10 not found.*cifar-10-batches-py/.*nowhere \(\$MESA_NB_DATA\).*data_dir"):
        load_cifar("cifar10", "test")


def test_missing_batch_file(cifar_dir):
    (cifar_dir/"data_batch_3").unlink()
    with pytest.raises(MesaError, match=f"missing data file: expected data_batch_3 in {cifar_dir}"):
        load_cifar("cifar10", "train", cifar_dir)


def test_corrupt_and_truncated_pickles(cifar_dir):
    (cifar_dir/"test_batch").write_bytes(b"\x80\x02}q\x00(U\x04data")      # cut short
    with pytest.raises(MesaError, match="test_batch is corrupt"): load_cifar("cifar10", "test", cifar_dir)
    rng = random.Random(0)
    for _ in range(300):                                                      # random bytes: every failure of the unpickler is a named refusal
        (cifar_dir/"test_batch").write_bytes(bytes(rng.getrandbits(8) for _ in range(200)))
        with pytest.raises(MesaError, match="test_batch"): load_cifar("cifar10", "test", cifar_dir)


def test_hostile_pickle_is_refused_not_executed(cifar_dir, tmp_path):
    marker = tmp_path/"executed"

    class Exploit:
        def __reduce__(self): return (os.system, (f"touch {marker}",))

    (cifar_dir/"test_batch").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}, protocol=2))
    with pytest.raises(MesaError, match=r"refused: refused global '(posix|os)\.system'.*not executed"):
        load_cifar("cifar10", "test", cifar_dir)
    assert not marker.exists()
    (cifar_dir/"test_batch").write_bytes(pickle.dumps({b"data": shutil.rmtree}, protocol=2))
    with pytest.raises(MesaError, match="refused global 'shutil.rmtree'"): read_pickle(cifar_dir/"test_batch")


@pytest.mark.parametrize("mutate,message", [
    (lambda p: write_batch(p, data=np.zeros((4, 3072), np.float32)), "'data' must be a uint8 array"),
    (lambda p: write_batch(p, data=np.zeros((4, 1024), np.uint8)), r"must have shape \(N, 3072\)"),
    (lambda p: write_batch(p, labels=[0, 1, 2]), "need 4 integer labels"),
    (lambda p: write_batch(p, labels=[0, 1, 2, 10]), r"labels must lie in \[0, 10\)"),
    (lambda p: p.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8)}, protocol=2)), "key 'labels' is missing"),
    (lambda p: p.write_bytes(pickle.dumps([1, 2, 3], protocol=2)), "holds a list, not a dict"),
])
def test_structure_is_validated(cifar_dir, mutate, message):
    mutate(cifar_dir/"test_batch")
    with pytest.raises(MesaError, match=message): load_cifar("cifar10", "test", cifar_dir)


def test_wrong_image_shape_and_dtype():
    x, y = torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(MesaError, match="must be uint8"): ImageSet(x.float(), y, list("ab"))
    with pytest.raises(MesaError, match=r"must be 4-D \(N, C, H, W\)"): ImageSet(x[0], y, list("ab"))
    with pytest.raises(MesaError, match=r"channels-last input\? permute"): ImageSet(x.permute(0, 2, 3, 1), y, list("ab"))
    with pytest.raises(MesaError, match="1-D int64"): ImageSet(x, y.int(), list("ab"))
    with pytest.raises(MesaError, match="4-D batch"): stamp(torch.zeros(3, 8, 8), torch.zeros(3, 3, 3))
    with pytest.raises(MesaError, match="float pixels"): stamp(x, torch.zeros(3, 3, 3))


def test_corrupt_run_record(tmp_path):
    (tmp_path/"metrics.json").write_text('{"asr": 0.')
    with pytest.raises(MesaError, match="metrics.json is not valid JSON"): read_json(tmp_path/"metrics.json")


def test_trigger_larger_than_image():
    imgs = torch.zeros(2, 3, 16, 16)
    with pytest.raises(MesaError, match="trigger of size 17x17 does not fit the 16x16 images"):
        stamp(imgs, torch.zeros(3, 17, 17))
    test = load_digits("test")
    with pytest.raises(MesaError, match="does not fit the 16x16 images"):
        attack_success_rate(build_model("smallcnn"), test, Trigger(torch.zeros(3, 20, 20)))


def test_unknown_canonical_id():
    with pytest.raises(MesaError, match="variant of canonical trigger 1"): canonical_trigger(4)
    with pytest.raises(MesaError, match="unknown canonical trigger id 512"): canonical_trigger(512)


@pytest.mark.parametrize("ratio", [-0.01, 1.01, float("nan")])
def test_poison_ratio_outside_unit_interval(ratio):
    with pytest.raises(MesaError, match="poison ratio must be in"):
        poison(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long), canonical_trigger(170), ratio)
    with pytest.raises(MesaError, match="poison ratio must be in"):
        backdoor(build_model("smallcnn"), load_digits("test"), canonical_trigger(170), ratio=ratio)


def test_target_outside_label_range():
    test = load_digits("test")
    with pytest.raises(MesaError, match=r"target class 10 is outside the label range \[0, 10\)"):
        backdoor(build_model("smallcnn"), test, canonical_trigger(170, target=10), ratio=0.1)
    with pytest.raises(MesaError, match="target must be a class index"): canonical_trigger(170, target=-1)


def test_non_finite_metrics_and_loss(tmp_path):
    with pytest.raises(MesaError, match="NaN or infinite"): write_json(tmp_path/"m.json", {"asr": float("inf")})
    assert not (tmp_path/"m.json").exists()
    with pytest.raises(MesaError, match="training loss became nan in epoch 1/2"):
        fit(build_model("smallcnn"), load_digits("test"), epochs=2, transform=lambda x, y: (x * float("nan"), y), device="cpu")


def test_unsafe_weights(tmp_path):
    torch.save({"w": torch.zeros(1), "code": print}, tmp_path/"evil.pt")
    with pytest.raises(MesaError, match="weights_only=True"): load_weights(build_model("smallcnn"), tmp_path/"evil.pt")
    with pytest.raises(MesaError, match="does not exist"): load_weights(build_model("smallcnn"), tmp_path/"none.safetensors")
