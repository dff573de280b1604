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
import torch

from mesa_nb.defense import MASK_MARGIN, _tail, class_pvalues, flag_classes
from mesa_nb.report import collect

GRID = (0.001, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)


def models(folder):
    "Per model of a zoo: backdoored or not, target, per-class scores, whether masked, Neural Cleanse's flags and index, detection seconds."
    out = []
    for r in collect(folder):
        nc = r.neural_cleanse
        targets = sorted(t.trigger.target for t in r.targets) if r.targets else [r.target]   # several backdoors: every target
        out.append(dict(backdoored=r.trigger is not None, targets=targets, asr=np.asarray(r.detection.per_class_asr, dtype=float),
                        masked=r.detection.per_class_area is not None, nc=None if nc is None else list(nc.flagged),
                        nc_score=None if nc is None else max(nc.anomaly), seconds=r.timing.get("detection"), kind=r.trigger.kind if r.trigger else "none"))
    return out


def rates(ms, flags):
    "(the share of backdoored models flagged at exactly their target(s), the share of clean ones flagged at all, and the counts)."
    bd = [f == m["targets"] for m, f in zip(ms, flags) if m["backdoored"]]
    cl = [len(f) > 0 for m, f in zip(ms, flags) if not m["backdoored"]]
    return sum(bd) / max(len(bd), 1), sum(cl) / max(len(cl), 1), f"{sum(bd)}/{len(bd)}", f"{sum(cl)}/{len(cl)}"


def by_pvalue(ms, significance): return [class_pvalues(m["asr"], significance)[1] for m in ms]


def step_up(asr, significance: float, floor: float = 0.5) -> list[int]:
    "A candidate against masking: the j-th highest class tested against the classes below it only; every class down to the lowest significant one above `floor`."
    z = np.arcsin(np.sqrt(asr))
    order, K, last = np.argsort(-z, kind="stable"), len(asr), 0
    for j in range(1, K // 2 + 1):
        c, ref = order[j - 1], torch.as_tensor(z[order[j:]])
        p = _tail(float(z[c]), ref, K - j + 1)
        if p is not None and p < significance and asr[c] > floor: last = j
    return sorted(int(c) for c in order[:last])


def by_step_up(ms, significance): return [step_up(m["asr"], significance) for m in ms]


def by_top_pvalue(ms, significance):
    "A candidate: the top class alone, when its p-value is below `significance` (at most one class, as the margin rule)."
    out = []
    for m in ms:
        top = int(m["asr"].argmax()); p = class_pvalues(m["asr"])[0][top]
        out.append([top] if p is not None and p < significance else [])
    return out
def by_threshold(ms): return [flag_classes(m["asr"], 0.5, MASK_MARGIN if m["masked"] else 0.0) for m in ms]


def auroc(ms, score):
    from sklearn.metrics import roc_auc_score
    s = [score(m) for m in ms]
    return math.nan if any(v is None for v in s) else roc_auc_score([m["backdoored"] for m in ms], s)


def top_p(m):
    p = class_pvalues(m["asr"])[0][int(m["asr"].argmax())]
    return 0.0 if p is None else -math.log10(max(p, 1e-300))


CANDIDATES = {"p-value": by_pvalue,          # the library's rule (`--rule pvalue`): the top class against the other unflagged ones, stepping down
              "step-up p-value": by_step_up,   # a candidate: each class against the classes below it, above ASR 0.5
              "top-class p-value": by_top_pvalue}   # a candidate: the top class alone, by its p-value


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("calibration")
    ap.add_argument("evaluation", nargs="*")
    ap.add_argument("--grid", type=float, nargs="+", default=list(GRID))
    a = ap.parse_args()
    cal = models(a.calibration)
    print(f"## calibration: {a.calibration} ({sum(m['backdoored'] for m in cal)} backdoored, {sum(not m['backdoored'] for m in cal)} clean)\n")
    print("| significance | " + " | ".join(f"{n}: exact target | {n}: clean flagged" for n in CANDIDATES) + " |\n|---|" + "---|---|" * len(CANDIDATES))
    best = {n: None for n in CANDIDATES}
    for s in sorted(a.grid):
        cells = []
        for n, rule in CANDIDATES.items():
            e, c, en, cn = rates(cal, rule(cal, s))
            cells += [en, cn]
            if c <= 0.05 and (best[n] is None or e - c > best[n][1]): best[n] = (s, e - c)
        print(f"| {s:g} | " + " | ".join(cells) + " |")
    chosen = {n: b[0] for n, b in best.items() if b is not None}
    print("\nchosen: " + "; ".join(f"{n} significance {s:g}" for n, s in chosen.items()) + "\n")
    for folder in [a.calibration] + a.evaluation:
        ms = models(folder)
        kinds = sorted({m["kind"] for m in ms if m["backdoored"]})
        secs = [m["seconds"] for m in ms if m["seconds"]]
        print(f"## {'calibration' if folder == a.calibration else 'evaluation'}: {folder} ({sum(m['backdoored'] for m in ms)} backdoored of kinds "
              f"{', '.join(kinds)}; {sum(not m['backdoored'] for m in ms)} clean); detection {np.mean(secs):.1f}s per model on average\n")
        print("| rule | exact target | clean flagged |\n|---|---|---|")
        rules = {f"{n} < {s:g} (chosen above)": CANDIDATES[n](ms, s) for n, s in chosen.items()}
        rules["mean ASR > 0.5 (lead 0.1 with masks): the default"] = by_threshold(ms)
        if all(m["nc"] is not None for m in ms): rules["Neural Cleanse anomaly index > 2"] = [m["nc"] for m in ms]
        for name, flags in rules.items():
            _, _, en, cn = rates(ms, flags)
            print(f"| {name} | {en} | {cn} |")
        if len({m["backdoored"] for m in ms}) == 2:
            print(f"\nAUROC: −log10 p of the top class {auroc(ms, top_p):.3f}; top class's mean ASR {auroc(ms, lambda m: float(m['asr'].max())):.3f}; "
                  f"Neural Cleanse's largest anomaly index {auroc(ms, lambda m: m['nc_score']):.3f}")
        print()


if __name__ == "__main__":
    main()
