"""The residual surface of finished runs' repaired models, measured again on many more held-out images.

A run measures every model's surface on `surface_images` stamped images per member (16 for the `cpu` preset), so one
image is 6.2 points and the largest excess over 1,024 members is mostly noise. This script reloads, for each run
folder given, the clean model (cached beside the runs) and the repaired model the run saved (`repaired.safetensors`:
the chosen repair, named in the output: the uniform ensemble by default, its first retraining seed), draws the run's own trigger family and
held-out split, and measures both on `--images` stamped images per member (the same images for both models). Printed
per run: the largest excess over the clean model, the number of members more than 10 points above it, and how many of
those remain above +10 points by more than two standard errors of their paired difference; with `--backdoored`, the
same for the backdoored model, for scale.

Run: python scripts/surface_check.py outputs/cifar-eval/cifar10-smallcnn-*-s0 [--images 128] [--backdoored] [--data-dir PATH]
"""
import argparse
import math
import sys
import time
from pathlib import Path

import torch

from mesa_nb.core import MesaError, read_json
from mesa_nb.data import defender_split, load_dataset
from mesa_nb.defense import surface
from mesa_nb.experiment import RunConfig, clean_path
from mesa_nb.models import load_model
from mesa_nb.threat import family_size, parse_trigger, trigger_family


def excess_line(name: str, s, floor, images: int, margin: float = 0.1) -> str:
    a, f = torch.tensor(s.asr, dtype=torch.float64), torch.tensor(floor.asr, dtype=torch.float64)
    e = a - f
    se = torch.sqrt((a * (1 - a) + f * (1 - f)).clamp_min(1 / images) / images)     # paired difference: an upper bound of its SE
    above = e > margin + 1e-9
    sure = e - 2 * se > margin
    return (f"{name}: largest excess {100 * e.max():+.1f} points (member {int(e.argmax())}), members above +{100 * margin:.0f}: "
            f"{int(above.sum())} of {len(e)}, of which beyond two standard errors: {int(sure.sum())}; share at ASR ≥ 0.5: {s.above_05:.1%}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished run folders (metrics.json, repaired.safetensors)")
    ap.add_argument("--images", type=int, default=128, help="stamped held-out images per member of the family")
    ap.add_argument("--backdoored", action="store_true", help="measure the backdoored model too, for scale")
    ap.add_argument("--data-dir", default=None, help="the dataset folder, when the runs' config.json does not name it")
    a = ap.parse_args(argv)
    floors, data = {}, {}
    for run in a.runs:
        if not (run/"metrics.json").is_file() or not (run/"repaired.safetensors").is_file():
            print(f"{run}: not a finished run with a saved repaired model; skipped"); continue
        cfg = RunConfig(**{k: v for k, v in read_json(run/"config.json").items() if k in RunConfig.__dataclass_fields__})
        if cfg.trigger == "none": continue
        key = (cfg.dataset, cfg.data_dir or a.data_dir)
        if key not in data: data[key] = load_dataset(cfg.dataset, "test", a.data_dir or cfg.data_dir)
        test = data[key]
        _, held = defender_split(test, cfg.seed)
        trig = parse_trigger(cfg.trigger, cfg.target, test.num_classes, test.shape)
        told = None if (cfg.mask or trig.mask is not None) else trig.size
        family = trigger_family(test.shape, family_size(cfg.surface_family, test.shape, told), images=a.images)
        cp = clean_path(cfg, run.parent)
        fkey = (cp, family.kind, family.images)
        t0 = time.perf_counter()
        if fkey not in floors:
            floors[fkey] = surface(load_model(cp, "cpu"), held, family, cfg.target, cfg.location)
        floor = floors[fkey]
        rep = surface(load_model(run/"repaired.safetensors", "cpu"), held, family, cfg.target, cfg.location, floor)
        print(f"{run.name} ({family.kind}, {len(floor.asr)} members × {a.images} images, {time.perf_counter() - t0:.0f} s)")
        chosen = read_json(run/"metrics.json").get("defense", {}).get("chosen")
        print("  " + excess_line(f"repaired ({'β=' + chosen if chosen and chosen != 'ensemble' else 'ensemble'})", rep, floor, a.images))
        if a.backdoored:
            bd = surface(load_model(run/"backdoored.safetensors", "cpu"), held, family, cfg.target, cfg.location, floor)
            print("  " + excess_line("backdoored", bd, floor, a.images))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    try: sys.exit(main())
    except MesaError as e:
        print(f"surface_check: error: {e}", file=sys.stderr); sys.exit(2)
