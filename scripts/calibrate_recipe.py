"""Choose the shared retraining recipe on calibration triggers: the ideal defense (retraining on the true trigger) per recipe.

A recipe removes a backdoor when retraining with the *true* trigger brings its ASR down to what the clean model, which
never saw the backdoor, already gives that trigger (the floor), at little cost in accuracy. For each calibration trigger
the backdoored model is made exactly as a run of the preset makes it (the same clean model, cached in `--clean-dir`
so a batch there reuses it, the same attack and seed); then each candidate recipe retrains it with the true trigger
once per seed. Printed per recipe: the ideal's ASR and its excess over the floor (mean and worst trigger), the robust
accuracy, and the accuracy lost against the backdoored model, all on the run's held-out images.

Every (recipe, trigger, seed) result is written to `--out`/calibration.json as it is made, so a killed run resumes.
The triggers used here must never be the ones a recipe is then reported on.
Run: python scripts/calibrate_recipe.py --data-dir PATH [--triggers 170 113 color:0 3] [--seeds 0 1 2]
"""
import argparse
import copy
import time
from dataclasses import replace
from pathlib import Path

import torch

from mesa_nb.core import check, read_json, seed_everything, write_json
from mesa_nb.data import defender_split, load_dataset
from mesa_nb.defense import Retrain, evaluate, fixed_sampler, unlearn
from mesa_nb.experiment import clean_model, make_config
from mesa_nb.models import load_model, save_model, use_cpu_bf16
from mesa_nb.threat import backdoor, parse_trigger

CALIBRATION = ["170", "113", "color:0", "3"]
EARLIER_LR = {"cpu": 0.003, "quick": 0.01, "paper": 1e-3, "smoke": 0.01}   # the presets' retraining lr before this choice (constant schedule)
RECIPES = {   # name -> changes to the preset's recipe (lr0: the earlier lr); the rest (epochs, batch, extras) stays the preset's
    "earlier preset": lambda lr0: dict(ratio=0.05, lr=lr0, schedule="constant"),
    "r0.2": lambda lr0: dict(ratio=0.2, lr=lr0, schedule="constant"),
    "r0.2 lr0.01 cosine": lambda lr0: dict(ratio=0.2, lr=0.01, schedule="cosine"),
    "r0.3 3ep lr0.01 cosine": lambda lr0: dict(ratio=0.3, epochs=3, lr=0.01, schedule="cosine"),
    "r0.2 4ep": lambda lr0: dict(ratio=0.2, epochs=4, lr=lr0, schedule="constant"),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--triggers", nargs="+", default=CALIBRATION)
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="retraining seeds per (recipe, trigger)")
    ap.add_argument("--clean-dir", default="outputs/cifar-eval", help="where the preset's clean model is cached (a batch there reuses it)")
    ap.add_argument("--out", default="outputs/calibration")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                    help="every classifier pass (attack, retraining, evaluation) in bf16 on a CPU that computes it natively (default: the "
                         "preset's, RunConfig.bf16); the models and results in --out are not told apart by it: give another --out")
    ap.add_argument("--prepare-only", action="store_true", help="make the clean and backdoored models, retrain nothing")
    ap.add_argument("--summary", action="store_true", help="print the table of what --out holds, retrain nothing")
    a = ap.parse_args()
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    results = read_json(out/"calibration.json") if (out/"calibration.json").is_file() else {}
    if a.summary: return summary(results, a.recipes, a.triggers)
    cfg0 = make_config(a.preset, data_dir=a.data_dir, device=a.device, bf16=a.bf16)
    use_cpu_bf16(cfg0.bf16)                              # as a run of the preset trains
    train = load_dataset(cfg0.dataset, "train", cfg0.data_dir)
    test = load_dataset(cfg0.dataset, "test", cfg0.data_dir)
    pool, held = defender_split(test, cfg0.seed)
    clean, _ = clean_model(cfg0, train, a.clean_dir)
    models = {}
    for spec in a.triggers:
        cfg = make_config(a.preset, data_dir=a.data_dir, device=a.device, bf16=a.bf16, trigger=spec)
        trig = parse_trigger(cfg.trigger, cfg.target, test.num_classes, test.shape)
        check(trig is not None, "calibration triggers must be backdoors, not none")
        path = out/f"backdoored-{cfg.trigger.replace(':', '-')}.safetensors"
        if path.is_file(): model = load_model(path, a.device)
        else:
            model = copy.deepcopy(clean); seed_everything(cfg.seed); t0 = time.perf_counter()
            backdoor(model, train, trig, ratio=cfg.ratio, epochs=cfg.attack_epochs, lr=cfg.attack_lr, schedule=cfg.attack_schedule,
                     batch_size=cfg.attack_batch_size, location=cfg.location, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov,
                     augmentation=cfg.augmentation, device=a.device)
            save_model(model, path, trigger=trig.name)
            print(f"{spec}: backdoored in {time.perf_counter() - t0:.0f} s", flush=True)
        floor, before = evaluate(clean, held, trig, cfg.location, cfg.seed, a.device), evaluate(model, held, trig, cfg.location, cfg.seed, a.device)
        models[spec] = (model, trig, cfg, floor, before)
        print(f"{spec}: clean model ASR {floor.asr:.1%} (accuracy {floor.accuracy:.1%}); backdoored ASR {before.asr:.1%}, accuracy {before.accuracy:.1%}", flush=True)
    if a.prepare_only: return
    for name in a.recipes:
        for spec, (model, trig, cfg, floor, before) in models.items():
            for s in a.seeds:
                key = f"{name} | {spec} | {s}"
                if key in results: continue
                recipe = replace(cfg.recipe, **RECIPES[name](EARLIER_LR[a.preset]))
                torch.manual_seed(s); t0 = time.perf_counter()
                rep = unlearn(model, pool, fixed_sampler(trig.patch), recipe, a.device)
                e = evaluate(rep, held, trig, cfg.location, cfg.seed, a.device)
                results[key] = dict(recipe=name, trigger=spec, seed=s, asr=e.asr, accuracy=e.accuracy, robust_accuracy=e.robust_accuracy,
                                    floor=floor.asr, before_accuracy=before.accuracy, seconds=time.perf_counter() - t0)
                write_json(out/"calibration.json", results)
                print(f"{key}: ASR {e.asr:.1%} (floor {floor.asr:.1%}), accuracy {e.accuracy:.1%}, {results[key]['seconds']:.0f} s", flush=True)
    summary(results, a.recipes, a.triggers)


def summary(results: dict, recipes: list[str], triggers: list[str]):
    "The table: per recipe, the ideal's ASR and excess over the floor (mean over triggers of the mean over seeds, and the worst trigger), robust accuracy, accuracy lost."
    print("\n| recipe | ideal ASR, mean (worst trigger) | excess over the clean model's ASR, points, mean (worst) | robust accuracy | accuracy lost, points, mean (worst) |")
    print("|---|---|---|---|---|")
    for name in recipes:
        rows = [r for r in results.values() if r["recipe"] == name and r["trigger"] in triggers]
        if not rows: continue
        per = {t: [r for r in rows if r["trigger"] == t] for t in triggers}
        mean = lambda rs, f: sum(f(r) for r in rs) / len(rs)
        asr = {t: mean(rs, lambda r: r["asr"]) for t, rs in per.items() if rs}
        exc = {t: mean(rs, lambda r: r["asr"] - r["floor"]) for t, rs in per.items() if rs}
        lost = {t: mean(rs, lambda r: r["before_accuracy"] - r["accuracy"]) for t, rs in per.items() if rs}
        ra = mean(rows, lambda r: r["robust_accuracy"])
        m = lambda d: sum(d.values()) / len(d)
        print(f"| {name} | {m(asr):.1%} ({max(asr.values()):.1%}) | {100 * m(exc):+.1f} ({100 * max(exc.values()):+.1f}) | {ra:.1%} | "
              f"{100 * m(lost):.1f} ({100 * max(lost.values()):.1f}) |")


if __name__ == "__main__":
    main()
