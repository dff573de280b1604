"""System time of the `cpu` preset's clean training, with glibc's allocator as it starts and with other settings.

Each measurement is a fresh child process (glibc reads its MALLOC_* variables once, at start) that trains the
`cpu` preset's network (small CNN, one-cycle SGD at lr 0.05, augmentation) on the first `--images` CIFAR-10
training images for one epoch at the given batch size, and reports the user and system CPU seconds and the page
faults of that training alone (`resource.getrusage`, loading excluded). CPU seconds, unlike wall time, hold on a
machine other work shares. Every figure is also scaled to one epoch of the preset (50,000 images).

Why: a 32x32 image with 32 channels in float32 is 128 KiB, so the first layers' activations at batch 256 are
32 MiB each, the most glibc's dynamic mmap threshold ever reaches (at 128 they are 16 MiB, under it once the
threshold has risen, though other blocks still come and go by mmap). Each such tensor is then its own mmap,
munmapped when freed and faulted in page by page when the next step allocates it again.
Run: MESA_NB_DATA=... OMP_NUM_THREADS=1 python scripts/malloc_check.py [--images 12800] [--batch 128 256]
     [--variants 0 3] (numbered as VARIANTS below, from 0) [--repeats 1]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

VARIANTS = {   # name -> the environment a child starts with (on top of this one's, without any MALLOC_* of its own)
    "glibc defaults": {},
    "MALLOC_MMAP_THRESHOLD_=32 MiB (the most glibc allows)": {"MALLOC_MMAP_THRESHOLD_": str(32 << 20)},
    "MALLOC_MMAP_MAX_=0 alone": {"MALLOC_MMAP_MAX_": "0"},
    "the environment mesa-nb gives kernels and workers": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30)},
    "keep_freed_memory() in the process (mesa-nb defend)": {"MALLOC_CHECK_KEEP": "1"},
}
EPOCH = 50_000   # CIFAR-10 training images: one epoch of the preset


def child(a):
    "Train one epoch on the first `images` images and print the training's rusage as JSON."
    import torch
    batch = a.batch[0]
    if os.environ.get("MALLOC_CHECK_KEEP"):
        from mesa_nb.cli import keep_freed_memory
        keep_freed_memory()
    from mesa_nb.data import load_dataset
    from mesa_nb.experiment import make_config
    from mesa_nb.models import build_model, fit
    cfg = make_config("cpu", clean_batch_size=batch)
    train = load_dataset("cifar10", "train")
    train = train.subset(torch.arange(min(a.images, len(train))))
    torch.manual_seed(0)
    model = build_model(cfg.model, train.num_classes)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    fit(model, train, epochs=1, lr=cfg.clean_lr, batch_size=batch, label_smoothing=cfg.label_smoothing, device="cpu")
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    print(json.dumps(dict(user=r1.ru_utime - r0.ru_utime, sys=r1.ru_stime - r0.ru_stime, minflt=r1.ru_minflt - r0.ru_minflt, maxrss=r1.ru_maxrss,
                          wall=t1 - t0, images=len(train), threads=torch.get_num_threads())))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=12_800, help="training images per measurement (one epoch over them)")
    p.add_argument("--batch", type=int, nargs="+", default=[128, 256], help="batch sizes (the cpu preset: 256)")
    p.add_argument("--variants", nargs="+", type=int, default=None, help="which variants, by number (default: all)")
    p.add_argument("--repeats", type=int, default=1, help="measurements per variant and batch size")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child: return child(a)
    names = [n for i, n in enumerate(VARIANTS) if a.variants is None or i in a.variants]
    print(f"one epoch over {a.images:,} CIFAR-10 training images, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"per preset epoch: x {EPOCH / a.images:.2f}\n")
    print("| allocator | batch | user s / epoch | sys s / epoch | minor faults / epoch | peak memory | wall s (this machine) |")
    print("|---|---|---|---|---|---|---|")
    for b in a.batch:
        for n in names:
            for _ in range(a.repeats):
                env = {**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}, **VARIANTS[n]}
                out = subprocess.run([sys.executable, __file__, "--child", "--images", str(a.images), "--batch", str(b)],
                                     env=env, capture_output=True, text=True)
                if out.returncode: sys.exit(f"the measurement ({n}, batch {b}) failed:\n{out.stderr}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                k = EPOCH / r["images"]
                print(f"| {n} | {b} | {r['user'] * k:.1f} | {r['sys'] * k:.2f} | {r['minflt'] * k:,.0f} | {r['maxrss'] / 2**20:.2f} GiB | {r['wall']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
