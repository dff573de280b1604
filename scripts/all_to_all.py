"""An all-to-all backdoor (every class c sent to c + 1 by one trigger): what detection says, and what MESA's generators found.

Trains the digits model of the `quick` preset (clean, 15 epochs), then a copy poisoned all-to-all with trigger 170 (a
share `--ratio` of the images stamped and relabelled c + 1, `--epochs` epochs; the `quick` preset's all-to-one recipe,
r = 0.1 for 15 epochs, leaves an all-to-all ASR near 13 %). For the clean and the backdoored model it runs detection
as a run does (every class at beta 0.8, `--steps` steps, known size 3x3) and prints each class's score, the verdict of
the threshold rule and of the p-value rule, and the ASR of each class's generated triggers per source class
(`search.source_asr`): the largest source of each row and which class it is.

With `--clean-zoo DIR --triggers ...` it runs the library's all-to-all check instead (`defense.all_to_all_check`,
`--check-all-to-all`): are the top sources of the K rows all different (a permutation, as an all-to-all backdoor makes
them)? Under top sources drawn at random it happens with probability D_K / (K-1)^K (D_K: derangements; 3.8e-4 for
K = 10). It prints how many of the zoo's cached clean models and how many all-to-all models (one per trigger of
`--triggers`) it flags.
Run: python scripts/all_to_all.py [--ratio 0.3] [--epochs 40] [--steps 100] [--seed 0]
     python scripts/all_to_all.py --clean-zoo outputs/zoo-digits-s0 --triggers 170 color:3 bw:1 0 [--mask]
"""
import argparse
import time
from pathlib import Path

import torch

from mesa_nb.cli import keep_freed_memory
from mesa_nb.core import seed_everything
from mesa_nb.data import defender_split, load_digits
from mesa_nb.defense import DetectSettings, detect, flag, permutation_pvalue
from mesa_nb.models import accuracy, build_model, fit, load_model
from mesa_nb.search import SearchSettings, source_asr
from mesa_nb.threat import backdoor, canonical_trigger, parse_trigger, trigger_outcomes


def checked(model, pool, mesa, steps, seed, size=3):
    "Detection as a run does it (known size 3x3, or masks with size None), with the library's all-to-all check (`defense.all_to_all_check`)."
    return detect(model, pool, size, mesa, DetectSettings(detect_steps=steps, check_all_to_all=True), seed=seed, device="cpu")[0]


def permutation_check(a, train, pool, held, mesa):
    "The check on a zoo's cached clean models and on one all-to-all model per trigger."
    print(f"null: all 10 top sources different with probability {permutation_pvalue(10):.1e} when drawn at random")
    clean = sorted(Path(a.clean_zoo).glob("clean-*.safetensors"))
    size = None if a.mask else 3
    print(f"detection with {'masks (the size unknown)' if a.mask else 'a known size, 3x3'}")
    hits = [checked(load_model(p, "cpu"), pool, mesa, a.steps, a.seed, size).all_to_all for p in clean]
    print(f"clean models of {a.clean_zoo}: {sum(hits)} of {len(hits)} flagged")
    base = load_model(clean[0], "cpu")
    for spec in a.triggers:
        t = parse_trigger(spec, 0, 10, (3, 16, 16))
        m = build_model("smallcnn"); m.load_state_dict(base.state_dict())
        backdoor(m, train, t, ratio=a.ratio, epochs=a.epochs, lr=0.05, schedule="onecycle", device="cpu", all_to_all=True)
        asr = trigger_outcomes(m, held, t, device="cpu", shift=1)[0]
        det = checked(m, pool, mesa, a.steps, a.seed, size)
        print(f"all-to-all {t.name}: c -> c + 1 on {asr:.1%} of held-out images; {det.verdict()}; all-to-all check: {'flagged' if det.all_to_all else 'not flagged'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--steps", type=int, default=100, help="detection search steps (the quick preset's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clean-zoo", default=None, help="a zoo folder whose cached clean models the permutation check is tried on")
    ap.add_argument("--triggers", nargs="*", default=["170"], help="with --clean-zoo: one all-to-all model per trigger")
    ap.add_argument("--mask", action="store_true", help="with --clean-zoo: detection with masks over the whole image (the size unknown), as the zoos ran")
    a = ap.parse_args()
    keep_freed_memory()
    seed_everything(a.seed)
    train, test = load_digits("train"), load_digits("test")
    pool, held = defender_split(test, seed=a.seed)
    mesa = SearchSettings(search_batch=32, check_triggers=32, check_images=64)
    if a.clean_zoo: return permutation_check(a, train, pool, held, mesa)
    clean = build_model("smallcnn")
    fit(clean, train, epochs=15, lr=0.05, device="cpu")
    attacked, t = build_model("smallcnn"), canonical_trigger(170)
    attacked.load_state_dict(clean.state_dict())
    backdoor(attacked, train, t, ratio=a.ratio, epochs=a.epochs, lr=0.05, schedule="onecycle", device="cpu", all_to_all=True)
    for name, m in (("clean", clean), ("all-to-all", attacked)):
        asr, ra = trigger_outcomes(m, held, t, device="cpu", shift=1)
        t0 = time.perf_counter()
        det, res = detect(m, pool, 3, mesa, DetectSettings(detect_steps=a.steps), seed=a.seed, device="cpu")
        secs = time.perf_counter() - t0
        src = source_asr(res, m, pool, n=32, images=64, seed=a.seed)
        top, where = src.nan_to_num(0).max(1)
        print(f"## {name} model: accuracy {accuracy(m, held, device='cpu'):.3f}; trigger 170 sends class c to c + 1 on {asr:.1%} of the held-out "
              f"images (robust accuracy {ra:.1%}); detection {secs:.0f}s")
        print(f"p-value rule: {det.verdict()}; threshold rule: {flag(det.per_class_asr, DetectSettings(rule='threshold')).verdict()}")
        print("| class | " + " | ".join(map(str, range(10))) + " |\n|---|" + "---|" * 10)
        print("| mean ASR of its generated triggers | " + " | ".join(f"{v:.2f}" for v in det.per_class_asr) + " |")
        print("| p-value | " + " | ".join("–" if p is None else f"{p:.1g}" for p in det.p_values) + " |")
        print("| largest ASR on one source class | " + " | ".join(f"{v:.2f}" for v in top.tolist()) + " |")
        print("| that source class | " + " | ".join(map(str, where.tolist())) + " |\n")


if __name__ == "__main__":
    main()
