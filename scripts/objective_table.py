"""The search objectives side by side on the demo's backdoored digits model: how many triggers each level keeps.

Rows: `paper` (Algorithm 2 as the authors' code runs it), `paper-text` (as the paper's text describes it) and `maxent`
(the default, batch 32). Each row trains the three levels beta 0.5 / 0.8 / 0.9 side by side for `--steps` generator steps
(620: the authors' CIFAR-10 length) at alpha 0.1, for each seed, then draws `--samples` triggers per level and prints
the distinct black-and-white 3x3 patterns among them (`mesa_nb.search.distinct_patterns`) and their k-NN entropy (nats),
as mean and spread over the seeds. With `--ablation`, the `paper` objective again with each of its departures from the
text undone in turn (and the text with only the authors' generator and noise put in), at the levels of `--ablation-betas`
for the seeds of `--ablation-seeds`.

The model is the one `mesa-nb demo` saves (outputs/demo/.../backdoored.safetensors); when it is not there, the demo's
clean and backdoored models are trained here first (the `quick` preset, trigger 170, seed 0), into outputs/objective_table/.
The defender's search images are the demo's: the 638 of the test digits its seed-0 split gives the search.

Run: OMP_NUM_THREADS=1 python scripts/objective_table.py [--model PATH] [--seeds 0 1 2] [--ablation]
The results go to outputs/objective_table.json (or --out).
"""
import argparse
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from mesa_nb.core import environment, write_json
from mesa_nb.data import defender_split, load_dataset
from mesa_nb.mine import knn_entropy
from mesa_nb.models import load_model
from mesa_nb.search import AUTHORS, OBJECTIVES, PAPER_TEXT, SearchSettings, distinct_patterns, search

DEMO_MODEL = Path("outputs/demo/digits-smallcnn-170-t0-s0/backdoored.safetensors")
ROWS = {"paper": (OBJECTIVES["paper"], 128), "paper-text": (OBJECTIVES["paper-text"], 128), "maxent": (OBJECTIVES["maxent"], 32)}
TEXT = {k: getattr(PAPER_TEXT, k) for k in AUTHORS}          # the paper's text's value of each setting the authors' code changes
UNDO = {"plain generator": ("generator",), "noise U[-1, 1]": ("noise",), "plain generator, noise U[-1, 1]": ("generator", "noise"),
        "no jitter": ("jitter", "jitter_clip"), "critic on the generator's batch": ("critic_batch",), "linear critic output": ("critic_output",),
        "a location per image": ("location_draw",), "images drawn with replacement": ("draws",)}   # row name -> the settings put back as in the text


def ablations() -> dict:
    "The `paper` objective with one departure from the text undone at a time, and the text with only the generator and noise changed."
    rows = {f"paper, {name}": replace(OBJECTIVES["paper"], **{k: TEXT[k] for k in keys}) for name, keys in UNDO.items()}
    rows["paper-text + authors' generator and noise"] = replace(PAPER_TEXT, generator=AUTHORS["generator"], noise=AUTHORS["noise"])
    return rows


def demo_model(path: Path):
    "The demo's backdoored model: loaded from `path`, or trained as the demo trains it."
    if path.is_file(): return load_model(path, "cpu"), str(path)
    from mesa_nb.experiment import Run, make_config
    cfg = make_config("quick", trigger="170", seed=0, device="cpu", out_dir="outputs/objective_table")
    run = Run(cfg)
    model = run.attack()
    return model.eval(), str(run.path/"backdoored.safetensors")


def measure(model, ds, objective, batch: int, betas, steps: int, seed: int, samples: int) -> dict:
    "One search; the distinct patterns and k-NN entropy of `samples` triggers per level."
    t0 = time.perf_counter()
    res = search(model, ds, 0, SearchSettings(betas=betas, alpha=0.1, objective=objective, search_steps=steps, search_batch=batch), seed=seed, device="cpu")
    xs = res.sample(samples, seed)                                                   # (K, n, 3, 3, 3)
    return dict(distinct=distinct_patterns(xs).tolist(), entropy=knn_entropy(xs.flatten(2).float()).tolist(),
                valid=res.keep.tolist(), f_mean=res.f_mean.tolist(), seconds=time.perf_counter() - t0)


def spread(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table(results: dict, betas) -> str:
    "Markdown: per row and level, distinct patterns and k-NN entropy as mean ± standard deviation over seeds."
    head = "| search | batch | " + " | ".join(f"β={b:g} distinct / k-NN entropy" for b in betas) + " |"
    lines = [head, "|" + "---|" * (2 + len(betas))]
    for name, r in results.items():
        cells = []
        for k in range(len(betas)):
            d, h = spread([s["distinct"][k] for s in r["seeds"]]), spread([s["entropy"][k] for s in r["seeds"]])
            cells.append(f"{d[0]:.0f} ± {d[1]:.0f} / {h[0]:.1f} ± {h[1]:.1f}")
        lines.append(f"| {name} | {r['batch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=DEMO_MODEL, help=f"the backdoored model (default: {DEMO_MODEL}; trained when absent)")
    ap.add_argument("--steps", type=int, default=620, help="generator steps per search (default: 620)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--samples", type=int, default=2000, help="triggers drawn per level (default: 2000)")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--ablation", action="store_true", help="also the paper objective with each departure from the text undone")
    ap.add_argument("--ablation-betas", type=float, nargs="+", default=[0.8])
    ap.add_argument("--ablation-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", type=Path, default=Path("outputs/objective_table.json"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    model, source = demo_model(a.model)
    pool, _ = defender_split(load_dataset("digits", "test"), 0)                     # the demo's search images
    betas = (0.5, 0.8, 0.9)
    plan = [(name, ROWS[name][0], ROWS[name][1], betas, a.seeds) for name in a.rows]
    if a.ablation: plan += [(name, ob, 128, tuple(a.ablation_betas), a.ablation_seeds) for name, ob in ablations().items()]
    out = dict(model=source, search_images=len(pool), steps=a.steps, alpha=0.1, samples=a.samples,
               environment=environment("cpu"), rows={})
    for name, ob, batch, bts, seeds in plan:
        row = out["rows"][name] = dict(objective=asdict(ob), batch=batch, betas=list(bts), seeds=[])
        for seed in seeds:
            row["seeds"].append(dict(seed=seed, **measure(model, pool, ob, batch, bts, a.steps, seed, a.samples)))
            s = row["seeds"][-1]
            print(f"{name} (batch {batch}), seed {seed}: distinct {s['distinct']}, k-NN entropy {[round(h, 1) for h in s['entropy']]}, "
                  f"valid {s['valid']}, {s['seconds']:.0f}s", flush=True)
        write_json(a.out, out)                                                       # after every row: a long run keeps what it measured
    for bts in dict.fromkeys(tuple(r["betas"]) for r in out["rows"].values()):
        rows = {n: r for n, r in out["rows"].items() if tuple(r["betas"]) == bts}
        seeds = sorted({s["seed"] for r in rows.values() for s in r["seeds"]})
        print(f"\n{a.steps} steps, alpha 0.1, {a.samples} samples per level, mean ± sd over seeds {seeds}:\n")
        print(table(rows, bts))
    print(f"\nwritten: {a.out}")


if __name__ == "__main__":
    main()
