"""An all-to-all backdoor (every class c sent to c + 1 by one trigger): what detection says, and what MESA's generators found.

Trains the digits model of the `quick` preset (clean, 15 epochs), then a copy poisoned all-to-all with trigger 170 (a
share `--ratio` of the images stamped and relabelled c + 1, `--epochs` epochs; the `quick` preset's all-to-one recipe,
r = 0.1 for 15 epochs, leaves an all-to-all ASR near 13 %). For the clean and the backdoored model it runs detection
as a run does (every class at beta 0.8, `--steps` steps, known size 3x3) and prints each class's score, the verdict of
the threshold rule and of the p-value rule, and the ASR of each class's generated triggers per source class
(`search.source_asr`): the largest source of each row and which class it is.
Run: python scripts/all_to_all.py [--ratio 0.3] [--epochs 40] [--steps 100] [--seed 0]
"""
import argparse
import time

import torch

from mesa_nb.cli import keep_freed_memory
from mesa_nb.core import seed_everything
from mesa_nb.data import defender_split, load_digits
from mesa_nb.defense import DetectSettings, detect, flag
from mesa_nb.models import accuracy, build_model, fit
from mesa_nb.search import SearchSettings, source_asr
from mesa_nb.threat import backdoor, canonical_trigger, trigger_outcomes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--steps", type=int, default=100, help="detection search steps (the quick preset's)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    keep_freed_memory()
    seed_everything(a.seed)
    train, test = load_digits("train"), load_digits("test")
    pool, held = defender_split(test, seed=a.seed)
    clean = build_model("smallcnn")
    fit(clean, train, epochs=15, lr=0.05, device="cpu")
    attacked, t = build_model("smallcnn"), canonical_trigger(170)
    attacked.load_state_dict(clean.state_dict())
    backdoor(attacked, train, t, ratio=a.ratio, epochs=a.epochs, lr=0.05, schedule="onecycle", device="cpu", all_to_all=True)
    mesa = SearchSettings(search_batch=32, check_triggers=32, check_images=64)
    for name, m in (("clean", clean), ("all-to-all", attacked)):
        asr, ra = trigger_outcomes(m, held, t, device="cpu", shift=1)
        t0 = time.perf_counter()
        det, res = detect(m, pool, 3, mesa, DetectSettings(detect_steps=a.steps), seed=a.seed, device="cpu")
        secs = time.perf_counter() - t0
        src = source_asr(res, m, pool, n=32, images=64, seed=a.seed)
        top, where = src.nan_to_num(0).max(1)
        print(f"## {name} model: accuracy {accuracy(m, held, device='cpu'):.3f}; trigger 170 sends class c to c + 1 on {asr:.1%} of the held-out "
              f"images (robust accuracy {ra:.1%}); detection {secs:.0f}s")
        print(f"threshold rule: {det.verdict()}; p-value rule: {flag(det.per_class_asr, DetectSettings(rule='pvalue')).verdict()}")
        print("| class | " + " | ".join(map(str, range(10))) + " |\n|---|" + "---|" * 10)
        print("| mean ASR of its generated triggers | " + " | ".join(f"{v:.2f}" for v in det.per_class_asr) + " |")
        print("| p-value | " + " | ".join("–" if p is None else f"{p:.1g}" for p in det.p_values) + " |")
        print("| largest ASR on one source class | " + " | ".join(f"{v:.2f}" for v in top.tolist()) + " |")
        print("| that source class | " + " | ".join(map(str, where.tolist())) + " |\n")


if __name__ == "__main__":
    main()
