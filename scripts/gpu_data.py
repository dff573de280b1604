"""A CIFAR-10 subset small enough to travel with the working tree to a GPU machine, in the layout `load_cifar` reads.

It writes OUT/cifar-10-batches-py/ with the five training batch files and the test batch, each holding fewer
images than the original and compressed (`data_batch_1.xz` ... `test_batch.xz`: the same pickled dict, xz with a
delta filter, which `mesa_nb.data.read_pickle` reads as it reads the plain files), and `batches.meta`. What a
`paper`-preset run needs: training images for the clean model and the attack (`--train`, the same number of each
class, spread over the five files), and the whole test batch for the defender (`--test` 10,000: 8,000 search and
2,000 held-out images, as on the full data). Every image is chosen by a seeded draw and read with the project's
restricted unpickler. The folder is written next to OUT and swapped in when complete; the script fails when the
files together exceed `--max-bytes`.
Run: python scripts/gpu_data.py --src CIFAR10_FOLDER [--out .cache/gpu-data] [--train 8000] [--test 10000]
"""
import argparse
import json
import lzma
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from mesa_nb.core import MesaError
from mesa_nb.data import CIFAR, find_dataset_dir, load_cifar

SPEC = CIFAR["cifar10"]
# the pixel 32 bytes back is the one above in a channel plane: the delta makes neighbouring pixels compress
FILTERS = [{"id": lzma.FILTER_DELTA, "dist": 32}, {"id": lzma.FILTER_LZMA2, "preset": 6}]


def balanced(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    "Indices of `n` images, the same number of each class (n must be a multiple of the classes), in a seeded order."
    k = SPEC["num_classes"]
    if n % k: raise MesaError(f"{n} images cannot hold the same number of each of {k} classes: give a multiple of {k}")
    picked = []
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        if len(idx) < n // k: raise MesaError(f"the source has {len(idx)} images of class {c}; {n // k} asked for")
        picked.append(rng.choice(idx, n // k, replace=False))
    return rng.permutation(np.concatenate(picked))


def write_batch(path: Path, label: str, data: np.ndarray, labels: np.ndarray) -> int:
    "One batch file holding the original's dict, pickled and xz-compressed; its size in bytes."
    d = {b"batch_label": label.encode(), b"labels": [int(v) for v in labels], b"data": np.ascontiguousarray(data, np.uint8)}
    # protocol 4 keeps the pixels as bytes; protocol 2 writes them as latin-1 text, half again as large and compressing worse
    path.write_bytes(lzma.compress(pickle.dumps(d, protocol=4), format=lzma.FORMAT_XZ, filters=FILTERS))
    return path.stat().st_size


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default=os.environ.get("MESA_NB_DATA"), help="the CIFAR-10 folder or its parent (default: $MESA_NB_DATA)")
    p.add_argument("--out", default=".cache/gpu-data", help="where cifar-10-batches-py/ is written (default: .cache/gpu-data)")
    p.add_argument("--train", type=int, default=8000, help="training images, a multiple of 50 (10 classes in 5 files) (default: 8000)")
    p.add_argument("--test", type=int, default=10000, help="test images, a multiple of 10 (default: 10000, the whole test batch)")
    p.add_argument("--seed", type=int, default=0, help="seeds the draw of images (default: 0)")
    p.add_argument("--max-bytes", type=int, default=40_000_000, help="fail above this many bytes in all (default: 40,000,000)")
    a = p.parse_args(argv)
    try:
        if not a.src: raise MesaError("no CIFAR-10 folder given: pass --src FOLDER or set MESA_NB_DATA (the folder holding cifar-10-batches-py)")
        if a.train < 50 or a.train % 50: raise MesaError(f"--train must be a positive multiple of 50 (10 classes in 5 files); got {a.train}")
        src = find_dataset_dir("cifar10", a.src)
        train, test = load_cifar("cifar10", "train", src), load_cifar("cifar10", "test", src)
        rng = np.random.default_rng(a.seed)
        tr, te = balanced(train.labels.numpy(), a.train, rng), balanced(test.labels.numpy(), a.test, rng)
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=".partial-"))
        try:
            folder = tmp/SPEC["folder"]; folder.mkdir()
            per_file = a.train // len(SPEC["train"])
            meta = {SPEC["names_key"]: [c.encode() for c in train.classes], b"num_cases_per_batch": per_file, b"num_vis": 3072}
            (folder/SPEC["meta"]).write_bytes(pickle.dumps(meta, protocol=2))
            x_tr, y_tr = train.images.numpy().reshape(len(train), -1), train.labels.numpy()
            x_te, y_te = test.images.numpy().reshape(len(test), -1), test.labels.numpy()
            sizes = {}
            for i, name in enumerate(SPEC["train"]):                          # each file holds 1/5 of every class
                rows = np.concatenate([tr[y_tr[tr] == c][i * per_file // 10:(i + 1) * per_file // 10] for c in range(10)])
                rows = rows[rng.permutation(len(rows))]
                sizes[name] = write_batch(folder/f"{name}.xz", f"training batch {i + 1} of 5 (subset)", x_tr[rows], y_tr[rows])
            sizes["test_batch"] = write_batch(folder/"test_batch.xz", "testing batch 1 of 1 (subset)", x_te[te], y_te[te])
            total = sum(sizes.values()) + (folder/SPEC["meta"]).stat().st_size
            if total > a.max_bytes:
                raise MesaError(f"the subset takes {total:,} bytes, over --max-bytes {a.max_bytes:,}: give fewer --train or --test images")
            back_tr, back_te = load_cifar("cifar10", "train", folder), load_cifar("cifar10", "test", folder)   # read back as a run reads it
            assert (len(back_tr), len(back_te)) == (a.train, a.test)
            assert np.bincount(back_tr.labels.numpy(), minlength=10).tolist() == [a.train // 10] * 10
            info = dict(source="CIFAR-10", seed=a.seed, train=a.train, test=a.test, bytes=total, files=sizes,
                        train_digest=back_tr.digest(), test_digest=back_te.digest())
            (tmp/"subset.json").write_text(json.dumps(info, indent=1) + "\n")
            for name in (SPEC["folder"], "subset.json"):                     # the new set replaces an earlier one whole
                target = out/name
                if target.is_dir(): shutil.rmtree(target)
                os.replace(tmp/name, target)
        finally: shutil.rmtree(tmp, ignore_errors=True)
    except MesaError as e:
        print(f"gpu_data: error: {e}", file=sys.stderr); return 2
    print(f"wrote {out/SPEC['folder']}/: {a.train:,} training and {a.test:,} test images, {total:,} bytes "
          f"({total / 2**20:.1f} MiB; the raw pixels take {(a.train + a.test) * 3072 / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
