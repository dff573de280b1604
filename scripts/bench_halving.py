"""Detection with and without successive halving, on the models of a zoo folder (`mesa-nb zoo`).

For every finished zoo member (its backdoored model, or the clean model a clean member used), the detection
search its run made (every class side by side, the run's steps, batch, trigger shape and seed) is made twice in
this process, once in full and once with `--rungs` of successive halving, timed in alternating order. Printed per
model: the top class and the flagged classes of each (mean ASR of generated triggers against the run's threshold and margin),
whether they agree, and the wall-time ratio; then the totals: agreement, the share of the full search's samples
halving trained, and the wall-time ratio over all models.
Run: python scripts/bench_halving.py outputs/zoo [--rungs 3] [--models 10] [--device cpu]
"""
import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from mesa_nb.data import defender_split, load_dataset
from mesa_nb.experiment import RunConfig, clean_path
from mesa_nb.core import read_json
from mesa_nb.defense import MASK_MARGIN, flag_classes
from mesa_nb.models import load_model
from mesa_nb.record import RunRecord
from mesa_nb.search import as_objective, per_class_asr, search_classes


def members(root: Path, n: int):
    "Up to n finished zoo members, clean and backdoored alternately: (run folder, config, record)."
    runs = sorted(p.parent for p in root.glob("*/metrics.json"))
    clean = [r for r in runs if "-none-" in r.name]; bd = [r for r in runs if "-none-" not in r.name]
    mixed = [r for pair in zip(clean, bd) for r in pair] + clean[len(bd):] + bd[len(clean):]
    for run in mixed[:n]:
        yield run, RunConfig(**read_json(run/"config.json")), RunRecord.read(run/"metrics.json")


def detect(model, cfg, pool, halving, device):
    t0 = time.perf_counter()
    ob = replace(as_objective(cfg.objective), area=cfg.mask_area)
    C, H, W = pool.shape
    res = search_classes(model, pool, replace(cfg.search_settings, objective=ob, search_steps=cfg.detect_steps),
                         trigger_shape=(C + 1, H, W) if cfg.mask else (C, 3, 3), location=cfg.location, seed=cfg.seed, device=device,
                         halving=halving)
    asr = per_class_asr(res, model, pool, n=cfg.check_triggers, images=cfg.check_images, seed=cfg.seed, device=device)
    return asr, res.trained, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("zoo", type=Path)
    ap.add_argument("--rungs", type=int, default=3)
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(1)
    agree, t_full, t_half, s_full, s_half, n = 0, 0.0, 0.0, 0, 0, 0
    print(f"{'model':<40} {'full: top, flagged':<24} {'halving: top, flagged':<24} {'same':<5} {'time ratio':>10}")
    for run, cfg, rec in members(args.zoo, args.models):
        test = load_dataset(cfg.dataset, "test", cfg.data_dir)
        pool, _ = defender_split(test, cfg.seed)
        path = run/"backdoored.safetensors" if rec.trigger else clean_path(cfg, args.zoo)
        model = load_model(path, args.device)
        order = [0, args.rungs] if n % 2 == 0 else [args.rungs, 0]          # alternate which goes first
        out = {h: detect(model, cfg, pool, h, args.device) for h in order}
        (a0, tr0, w0), (a1, tr1, w1) = out[0], out[args.rungs]
        margin = cfg.margin if cfg.margin is not None else MASK_MARGIN if cfg.mask else 0.0   # the run's flag rule, as `defend` sets it
        f0, f1 = flag_classes(a0, cfg.threshold, margin), flag_classes(a1, cfg.threshold, margin)
        top0, top1 = int(a0.argmax()), int(a1.argmax())
        same = top0 == top1 and f0 == f1
        agree += same; t_full += w0; t_half += w1; s_full += int(tr0.sum()); s_half += int(tr1.sum()); n += 1
        print(f"{run.name:<40} {f'{top0}, {f0}':<24} {f'{top1}, {f1}':<24} {str(same):<5} {w1 / w0:>10.2f}")
    print(f"\n{n} models: same top class and flags on {agree}/{n}; halving trained {s_half / s_full:.0%} of the full search's "
          f"samples; wall time halving / full {t_half / t_full:.2f} ({t_half:.0f} s against {t_full:.0f} s)")


if __name__ == "__main__":
    main()
