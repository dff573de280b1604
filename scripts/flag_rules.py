"""Detection's flag rules over model zoos: the p-value rule's one setting chosen on a calibration zoo, then judged on others.

The first folder is the calibration zoo (`mesa-nb zoo --zoo-seed 0`): for each significance of `--grid` it prints the
share of backdoored models flagged at exactly their target and of clean models flagged at all, and keeps the
significance with the most exact flags less clean flags among those that flag at most 5 % of the clean models (on a
tie, the smaller). Every other folder is an evaluation zoo, judged with that significance fixed, beside the threshold
rule (mean ASR above 0.5, and a lead of 0.1 when the size is unknown), Neural Cleanse's anomaly index above 2, and the
AUROC of the statistics behind them. Nothing is read off an evaluation zoo.
Run: python scripts/flag_rules.py outputs/zoo-digits-s0 outputs/zoo-digits-s1 [--grid 0.001 0.01 0.05]
"""
import argparse
import math

import numpy as np

from mesa_nb.defense import MASK_MARGIN, class_pvalues, flag_classes
from mesa_nb.report import collect

GRID = (0.0001, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1)


def models(folder):
    "Per model of a zoo: backdoored or not, target, per-class scores, whether masked, Neural Cleanse's flags and index, detection seconds."
    out = []
    for r in collect(folder):
        nc = r.neural_cleanse
        out.append(dict(backdoored=r.trigger is not None, target=r.target, asr=np.asarray(r.detection.per_class_asr, dtype=float),
                        masked=r.detection.per_class_area is not None, nc=None if nc is None else list(nc.flagged),
                        nc_score=None if nc is None else max(nc.anomaly), seconds=r.timing.get("detection"), kind=r.trigger.kind if r.trigger else "none"))
    return out


def rates(ms, flags):
    "(exact target share of the backdoored models, flagged share of the clean ones, and the counts)."
    bd = [f == [m["target"]] for m, f in zip(ms, flags) if m["backdoored"]]
    cl = [len(f) > 0 for m, f in zip(ms, flags) if not m["backdoored"]]
    return sum(bd) / max(len(bd), 1), sum(cl) / max(len(cl), 1), f"{sum(bd)}/{len(bd)}", f"{sum(cl)}/{len(cl)}"


def by_pvalue(ms, significance): return [class_pvalues(m["asr"], significance)[1] for m in ms]
def by_threshold(ms): return [flag_classes(m["asr"], 0.5, MASK_MARGIN if m["masked"] else 0.0) for m in ms]


def auroc(ms, score):
    from sklearn.metrics import roc_auc_score
    s = [score(m) for m in ms]
    return math.nan if any(v is None for v in s) else roc_auc_score([m["backdoored"] for m in ms], s)


def top_p(m):
    p = class_pvalues(m["asr"])[0][int(m["asr"].argmax())]
    return 0.0 if p is None else -math.log10(max(p, 1e-300))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("calibration")
    ap.add_argument("evaluation", nargs="*")
    ap.add_argument("--grid", type=float, nargs="+", default=list(GRID))
    a = ap.parse_args()
    cal = models(a.calibration)
    print(f"## calibration: {a.calibration} ({sum(m['backdoored'] for m in cal)} backdoored, {sum(not m['backdoored'] for m in cal)} clean)\n")
    print("| significance | exact target | clean flagged |\n|---|---|---|")
    best = None
    for s in sorted(a.grid):
        e, c, en, cn = rates(cal, by_pvalue(cal, s))
        print(f"| {s:g} | {en} | {cn} |")
        if c <= 0.05 and (best is None or e - c > best[1]): best = (s, e - c)
    if best is None: raise SystemExit("no significance of the grid keeps the clean models at <= 5 % flagged")
    sig = best[0]
    print(f"\nchosen significance: {sig:g}\n")
    for folder in [a.calibration] + a.evaluation:
        ms = models(folder)
        kinds = sorted({m["kind"] for m in ms if m["backdoored"]})
        secs = [m["seconds"] for m in ms if m["seconds"]]
        print(f"## {'calibration' if folder == a.calibration else 'evaluation'}: {folder} ({sum(m['backdoored'] for m in ms)} backdoored of kinds "
              f"{', '.join(kinds)}; {sum(not m['backdoored'] for m in ms)} clean); detection {np.mean(secs):.1f}s per model on average\n")
        print("| rule | exact target | clean flagged |\n|---|---|---|")
        rules = {f"p-value < {sig:g} (chosen above)": by_pvalue(ms, sig), "mean ASR > 0.5 (lead 0.1 with masks)": by_threshold(ms)}
        if all(m["nc"] is not None for m in ms): rules["Neural Cleanse anomaly index > 2"] = [m["nc"] for m in ms]
        for name, flags in rules.items():
            _, _, en, cn = rates(ms, flags)
            print(f"| {name} | {en} | {cn} |")
        print(f"\nAUROC: −log10 p of the top class {auroc(ms, top_p):.3f}; top class's mean ASR {auroc(ms, lambda m: float(m['asr'].max())):.3f}; "
              f"Neural Cleanse's largest anomaly index {auroc(ms, lambda m: m['nc_score']):.3f}\n")


if __name__ == "__main__":
    main()
