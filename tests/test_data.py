"""Real CIFAR-10 (skipped when absent) and the download path on a small archive built here."""
import pickle
import tarfile

import numpy as np
import pytest
import torch

from mesa_nb.core import MesaError
from mesa_nb.data import CIFAR, channel_stats, defender_split, download_cifar, extract_archive, load_cifar, md5sum


def test_real_cifar10(cifar_root):
    train, test = load_cifar("cifar10", "train", cifar_root), load_cifar("cifar10", "test", cifar_root)
    assert (len(train), len(test)) == (50000, 10000)
    assert train.images.shape == (50000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.bincount(train.labels).tolist() == [5000] * 10
    assert test.classes[:3] == ["airplane", "automobile", "bird"]
    mean, std = channel_stats(train.images)
    assert np.allclose(mean, CIFAR["cifar10"]["mean"], atol=1e-3) and np.allclose(std, CIFAR["cifar10"]["std"], atol=1e-3)
    search, held = defender_split(test, seed=0)
    assert (len(search), len(held)) == (8000, 2000)


def test_real_cifar10_missing_batch(cifar_root, tmp_path):
    d = tmp_path/"cifar-10-batches-py"; d.mkdir()
    for f in (cifar_root/"cifar-10-batches-py").iterdir():
        if f.name != "data_batch_4": (d/f.name).symlink_to(f)
    assert len(load_cifar("cifar10", "test", tmp_path)) == 10000
    with pytest.raises(MesaError, match=f"expected data_batch_4 in {d}"): load_cifar("cifar10", "train", tmp_path)


def make_archive(tmp_path, members=None):
    src = tmp_path/"src"/"cifar-10-batches-py"; src.mkdir(parents=True)
    rng = np.random.default_rng(0)
    (src/"test_batch").write_bytes(pickle.dumps({b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8),
                                                 b"labels": list(range(10))}, protocol=2))
    (src/"batches.meta").write_bytes(pickle.dumps({b"label_names": [b"x%d" % i for i in range(10)]}, protocol=2))
    arc = tmp_path/"cifar-10-python.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
        for m, data in (members or []):
            import io
            info = tarfile.TarInfo(m); info.size = len(data); tar.addfile(info, io.BytesIO(data))
    return arc


def test_download_checks_md5_then_extracts(tmp_path):
    arc = make_archive(tmp_path)
    folder = download_cifar("cifar10", tmp_path/"cache", url=arc.as_uri(), md5=md5sum(arc))
    ds = load_cifar("cifar10", "test", folder)
    assert len(ds) == 10 and ds.labels.tolist() == list(range(10))
    with pytest.raises(MesaError, match="has md5 .* expected 0{32}: the download is corrupt"):
        download_cifar("cifar10", tmp_path/"cache2", url=arc.as_uri(), md5="0" * 32)
    assert not (tmp_path/"cache2"/"cifar-10-batches-py").exists()          # nothing extracted
    assert [p.name for p in (tmp_path/"cache2").iterdir()] == []           # and no partial download left
    with pytest.raises(MesaError, match="could not download"):
        download_cifar("cifar10", tmp_path/"cache3", url=(tmp_path/"absent.tar.gz").as_uri())


def test_extraction_refuses_unsafe_members(tmp_path):
    arc = make_archive(tmp_path, members=[("../escaped.txt", b"x")])
    with pytest.raises(MesaError, match="unsafe member '../escaped.txt'"): extract_archive(arc, tmp_path/"out")
    assert not (tmp_path/"escaped.txt").exists()
    (tmp_path/"junk.tar.gz").write_bytes(b"not a tar file")
    with pytest.raises(MesaError, match="not a readable tar archive"): extract_archive(tmp_path/"junk.tar.gz", tmp_path/"o2")


def test_cifar100_layout(tmp_path):
    d = tmp_path/"cifar-100-python"; d.mkdir()
    rng = np.random.default_rng(1)
    meta = {b"fine_label_names": [b"f%d" % i for i in range(100)], b"coarse_label_names": [b"c%d" % i for i in range(20)]}
    (d/"meta").write_bytes(pickle.dumps(meta, protocol=2))
    for split, n in (("train", 12), ("test", 6)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": rng.integers(0, 100, n).tolist(),
                 b"coarse_labels": rng.integers(0, 20, n).tolist()}
        (d/split).write_bytes(pickle.dumps(batch, protocol=2))
    train = load_cifar("cifar100", "train", tmp_path)
    assert len(train) == 12 and train.num_classes == 100 and train.classes[99] == "f99"
    assert train.mean == CIFAR["cifar100"]["mean"]
    batch[b"fine_labels"][0] = 100
    (d/"test").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(MesaError, match=r"labels must lie in \[0, 100\)"): load_cifar("cifar100", "test", tmp_path)
