"""Which mask forms removal should retrain on: one run's removal search, retrained on several banks and seeds.

For a finished run defended with masks (`mesa-nb run ... --mask`, or a blend), the removal search of its target is made
again as the run made it (both mask forms at every level, the run's steps, batch, areas and seed). Its samples then
form four banks, each drawn from the uniform mixture of its valid sub-models as `defend` draws them: the pixel
masks', the blends', both forms' (the run's ensemble), and both forms' at the highest level. Each bank retrains the
backdoored model with the run's recipe once per seed (`--seeds`), and the original trigger's ASR and the clean accuracy on the
run's held-out images are printed per retraining, then as means.
One retraining varies by several points, so a comparison of banks needs several seeds.
Run: python scripts/removal_banks.py outputs/cifar-unknown/cifar10-smallcnn-blend0-0.15-t0-s0 [--seeds 0 1 2] [--device cpu]
"""
import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from mesa_nb.core import check, generator, read_json
from mesa_nb.data import defender_split, load_dataset
from mesa_nb.defense import bank_sampler, evaluate, unlearn
from mesa_nb.experiment import RunConfig
from mesa_nb.models import load_model
from mesa_nb.search import as_objective, search
from mesa_nb.threat import MASKS, parse_trigger


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a finished run folder with backdoored.safetensors and config.json")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="retraining seeds per bank")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    check((a.run/"backdoored.safetensors").is_file() and (a.run/"config.json").is_file(),
          f"{a.run} is not a finished run with a saved backdoored model: run `mesa-nb run --trigger ... --mask --out DIR` first")
    cfg = RunConfig(**read_json(a.run/"config.json"))
    test = load_dataset(cfg.dataset, "test", cfg.data_dir)
    pool, held = defender_split(test, cfg.seed)
    trigger = parse_trigger(cfg.trigger, cfg.target, test.num_classes, test.shape)
    check(trigger is not None, "a clean control has no trigger to remove: pick a backdoored run")
    model = load_model(a.run/"backdoored.safetensors", a.device)
    C, H, W = test.shape
    ob = replace(as_objective(cfg.objective), area=cfg.mask_area, blend_area=cfg.blend_area)
    t0 = time.perf_counter()
    res = search(model, pool, cfg.target, replace(cfg.search_settings, objective=ob, masks=MASKS),
                 trigger_shape=(C + 1, H, W), location=cfg.location, seed=cfg.seed, device=a.device)
    print(f"{res}: {time.perf_counter() - t0:.0f} s; valid " + ", ".join(f"{f} β={b:g}: {bool(k)}" for f, b, k in zip(res.masks, res.betas.tolist(), res.keep.tolist())))

    def bank(**which) -> torch.Tensor:                                      # `cfg.bank` triggers of these sub-models' mixture, as `defend` draws them
        valid = bool(res.keep[res.index(cfg.target, which.get("beta"), which.get("mask"))].any())
        return res.ensemble_sample(cfg.bank, cfg.target, valid_only=valid, seed=cfg.seed + 2, **which)[0]

    top = max(cfg.betas)
    banks = {"pixel masks": bank(mask="pixel"), "blends": bank(mask="blend"), "both forms": bank(), f"both forms, β={top:g}": bank(beta=top)}
    out = {k: [] for k in banks}
    for s in a.seeds:
        for name, b in banks.items():
            torch.manual_seed(s)
            rep = unlearn(model, pool, bank_sampler(b.to(a.device), generator(s, a.device)), cfg.recipe, a.device)
            e = evaluate(rep, held, trigger, cfg.location, cfg.seed, a.device)
            out[name].append((e.asr, e.accuracy))
            print(f"seed {s}, {name}: ASR {e.asr:.1%}, accuracy {e.accuracy:.1%}", flush=True)
    print(f"\n| retrained on | ASR left, mean (runs) | accuracy |\n|---|---|---|")
    for name, r in out.items():
        v = torch.tensor(r)
        print(f"| {name} | {v[:, 0].mean():.1%} ({', '.join(f'{x:.1%}' for x in v[:, 0].tolist())}) | {v[:, 1].mean():.1%} |")


if __name__ == "__main__":
    main()
