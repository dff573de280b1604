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

from mesa_nb.defense import MAJORITY, MASK_MARGIN, SIGNIFICANCE, _tail, class_scores, flag_classes, pvalues_against_all, pvalues_by_rank
from mesa_nb.report import collect, record_pixels, record_pvalues, record_targets

GRID = (0.001, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)


def models(folder):
    "Per model of a zoo: backdoored or not, target, per-class scores, whether masked, Neural Cleanse's flags and index, detection seconds."
    out = []
    for r in collect(folder):
        nc = r.neural_cleanse
        out.append(dict(record=r, backdoored=r.trigger is not None, targets=record_targets(r), asr=np.asarray(r.detection.per_class_asr, dtype=float),
                        masked=r.detection.per_class_area is not None, nc=None if nc is None else list(nc.flagged),
                        nc_score=None if nc is None else max(nc.anomaly), seconds=r.timing.get("detection"), kinds=sorted({t.trigger.kind for t in r.targets}) if r.targets else [r.trigger.kind] if r.trigger else []))
    return out


def rates(ms, flags):
    "(the share of backdoored models flagged at exactly their target(s), the share of clean ones flagged at all, and the counts)."
    bd = [f == m["targets"] for m, f in zip(ms, flags) if m["backdoored"]]
    cl = [len(f) > 0 for m, f in zip(ms, flags) if not m["backdoored"]]
    return sum(bd) / max(len(bd), 1), sum(cl) / max(len(cl), 1), f"{sum(bd)}/{len(bd)}", f"{sum(cl)}/{len(cl)}"


def by_pvalue(ms, significance): return [record_pvalues(m["record"], significance)[1] for m in ms]


def score(m):
    "The default rule's per-class score (`defense.class_scores`)."
    r = m["record"]
    return class_scores(r.detection.per_class_asr, r.detection.per_class_area, record_pixels(r)).numpy()


def step_down(m, significance: float) -> list[int]:
    "The textbook alternative on the same score: the top class against the other unflagged ones; a flagged class leaves the reference and the next is tested."
    z, asr, flagged = score(m), m["asr"], []
    K = len(z)
    while len(flagged) < K // 2:
        rest = [c for c in range(K) if c not in flagged]
        top = max(rest, key=lambda c: z[c])
        p = _tail(float(z[top]), torch.as_tensor(z[[c for c in rest if c != top]]), len(rest))
        if p is None or p >= significance or asr[top] <= MAJORITY: break
        flagged.append(top)
    return sorted(flagged)


def by_step_down(ms, significance): return [step_down(m, significance) for m in ms]


def step_up(m, significance: float) -> list[int]:
    "Each of the top half tested against the classes below it only, masks too (`defense.pvalues_by_rank`, the default with a known size)."
    z, asr = score(m), torch.as_tensor(m["asr"])
    return pvalues_by_rank(torch.as_tensor(z), asr, significance, len(z) // 2)[1]


def by_step_up(ms, significance): return [step_up(m, significance) for m in ms]


def against_all(m, significance: float, area: bool = True) -> list[int]:
    "Every class against all the other classes, a known size too (`defense.pvalues_against_all`, the rule before the rank-order test); without `area`, on the mean ASR alone."
    asr = torch.as_tensor(m["asr"])
    return pvalues_against_all(torch.as_tensor(score(m)) if area else asr, asr, significance, len(asr) // 2)[1]


def by_against_all(ms, significance): return [against_all(m, significance) for m in ms]


def by_asr_alone(ms, significance): return [against_all(m, significance, area=False) for m in ms]


def by_threshold(ms): return [flag_classes(m["asr"], 0.5, MASK_MARGIN if m["masked"] else 0.0) for m in ms]


def auroc(ms, score):
    from sklearn.metrics import roc_auc_score
    s = [score(m) for m in ms]
    return math.nan if any(v is None for v in s) else roc_auc_score([m["backdoored"] for m in ms], s)


def top_p(m):
    "−log10 of the p-value of the class with the highest score (0 when it has none)."
    p = record_pvalues(m["record"])[0][int(np.argmax(score(m)))]
    return 0.0 if p is None else -math.log10(max(p, 1e-300))


CANDIDATES = {"p-value": by_pvalue,                      # the library's rule (the default): masks every class against all the others, mean ASR per area; a known size generalized ESD
              "p-value against all the others": by_against_all,   # the same with a known size's classes against all the others too
              "p-value on mean ASR alone": by_asr_alone,   # the same without the area (the same with a known size)
              "step-down p-value": by_step_down,
              "step-up p-value": by_step_up}           # flagged classes leave the reference in turn


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("calibration")
    ap.add_argument("evaluation", nargs="*")
    ap.add_argument("--grid", type=float, nargs="+", default=list(GRID))
    a = ap.parse_args()
    cal = models(a.calibration)
    print(f"### calibration: {a.calibration} ({sum(m['backdoored'] for m in cal)} backdoored, {sum(not m['backdoored'] for m in cal)} clean)\n")
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
    print("\nchosen: " + "; ".join(f"{n} significance {s:g}" for n, s in chosen.items())
          + f" (the library's default significance, `defense.SIGNIFICANCE`: {SIGNIFICANCE:g})\n")
    for folder in [a.calibration] + a.evaluation:
        ms = models(folder)
        kinds = sorted({k for m in ms if m["backdoored"] for k in m["kinds"]})
        secs = [m["seconds"] for m in ms if m["seconds"]]
        masked = {m["masked"] for m in ms}
        size = "masks" if masked == {True} else "known size" if masked == {False} else "masks and known size"
        each = sorted({len(m["targets"]) for m in ms if m["backdoored"]})
        print(f"### {'calibration' if folder == a.calibration else 'evaluation'}: {folder} ({sum(m['backdoored'] for m in ms)} backdoored"
              f"{'' if each == [1] else ' with ' + ' or '.join(map(str, each)) + ' backdoors each'} of kinds {', '.join(kinds)}; "
              f"{sum(not m['backdoored'] for m in ms)} clean; {size}); detection {np.mean(secs):.1f}s per model on average\n")
        print("| rule | exact target | clean flagged |\n|---|---|---|")
        rules = {f"{n} < {s:g} (chosen above" + (", the default)" if n == "p-value" else ")"): CANDIDATES[n](ms, s) for n, s in chosen.items()}
        rules["mean ASR > 0.5 (lead 0.1 with masks): the threshold rule"] = by_threshold(ms)
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
