"""The same runs made two ways, side by side: what each measured and how long it took.

For every run folder found under both A and B (the same trigger, target and seed, e.g. one batch run in float32 and
again with `--bf16`), one line per figure: the backdoored model's accuracy and ASR, detection's flag and the target's
p-value, which MESA candidate was returned, the mean ASR (over retraining seeds or baseline runs) and accuracy of every
MESA candidate and every other defense, the largest excess of the returned repair's surface over the clean model, and
the run's stage times (comparable only when both ran alone on the machine). Then the largest gap between A and B over
all runs, per kind of figure, against the spread the runs' own retraining seeds show.
Run: python scripts/compare_runs.py A B [--labels float32 bf16]
"""
import argparse
import statistics
from pathlib import Path

from mesa_nb.record import RunRecord


def figures(rec: RunRecord) -> dict[str, float | str]:
    "What one record measured, by name: rates in [0, 1], flags as text."
    d = rec.detection
    out = {"backdoored accuracy": rec.attack.accuracy}
    if rec.attack.asr is not None: out["backdoored ASR"] = rec.attack.asr
    out["flagged"] = str(d.flagged) if d is not None else "-"
    if d is not None and d.p_values and rec.trigger is not None: out["target p-value"] = d.p_values[rec.trigger.target]
    if rec.defense.chosen: out["returned candidate"] = rec.defense.chosen     # its figures are its candidate's, below
    for name, runs in rec.defense.methods().items():
        if name == "MESA chosen": continue
        if runs and runs[0].asr is not None: out[f"{name} ASR"] = statistics.mean(e.asr for e in runs)
        if runs: out[f"{name} accuracy"] = statistics.mean(e.accuracy for e in runs)
    chosen = rec.defense.mesa.get(rec.defense.chosen) if rec.defense.chosen else None
    if chosen is not None and chosen.surface is not None and chosen.surface.excess_max is not None:
        out["returned surface excess"] = chosen.surface.excess_max
    return out


def seed_spread(rec: RunRecord) -> float:
    "The largest standard deviation of ASR over one candidate's retraining seeds: how much a figure moves by chance alone."
    sds = [statistics.pstdev([e.asr for e in c.runs]) for c in rec.defense.mesa.values() if len(c.runs) > 1 and c.asr is not None]
    return max(sds, default=0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a"); ap.add_argument("b")
    ap.add_argument("--labels", nargs=2, default=["A", "B"])
    args = ap.parse_args()
    la, lb = args.labels
    pairs = [(p.parent.name, RunRecord.read(p), RunRecord.read(Path(args.b)/p.parent.name/"metrics.json"))
             for p in sorted(Path(args.a).glob("*/metrics.json")) if (Path(args.b)/p.parent.name/"metrics.json").is_file()]
    if not pairs: raise SystemExit(f"no run folder holds a metrics.json under both {args.a} and {args.b}")
    gaps, spread = {}, []
    for name, ra, rb in pairs:
        fa, fb = figures(ra), figures(rb)
        spread.append(max(seed_spread(ra), seed_spread(rb)))
        print(f"\n{name}\n\n| figure | {la} | {lb} |\n|---|---|---|")
        for k in fa:
            if k not in fb: continue
            va, vb = fa[k], fb[k]
            if isinstance(va, str): print(f"| {k} | {va} | {vb} |"); gaps.setdefault("flags or choices that differ", []).append(float(va != vb)); continue
            fmt = (lambda v: f"{v:.2g}") if k == "target p-value" else (lambda v: f"{100 * v:+.1f}" if "excess" in k else f"{100 * v:.1f} %")
            print(f"| {k} | {fmt(va)} | {fmt(vb)} |")
            if k != "target p-value": gaps.setdefault("accuracy, points" if "accuracy" in k else "ASR or surface, points", []).append(abs(va - vb) * 100)
        ta, tb = ra.timing, rb.timing
        stages = [s for s in ("attack", "detection", "mesa", "baseline", "ideal", "total") if s in ta and s in tb]
        print("| seconds: " + ", ".join(stages) + " | " + ", ".join(f"{ta[s]:.0f}" for s in stages) + " | " + ", ".join(f"{tb[s]:.0f}" for s in stages) + " |")
        gaps.setdefault("total time, B / A", []).append(tb["total"] / ta["total"])
    print(f"\nover {len(pairs)} runs:")
    for k, v in gaps.items():
        print(f"  {k}: " + (f"{int(sum(v))} of {len(v)}" if k.startswith("flags") else f"mean {statistics.mean(v):.2f}, largest {max(v):.2f}"))
    print(f"  for scale: the largest standard deviation of a MESA candidate's ASR over its own retraining seeds, {100 * max(spread):.1f} points")


if __name__ == "__main__":
    main()
