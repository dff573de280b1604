"""Where a run's time goes: the demo's run (or any preset's), in this process, under cProfile.

Runs the steps `mesa-nb demo` runs (the `quick` preset, trigger 170, two threads) without papermill, into a temporary
folder, and prints each stage's seconds and the share of the run spent in the library's main costs (residual surfaces,
training, the searches) and in the torch kernels under them. cProfile adds its own overhead (the run takes about a
third longer than without it); the shares are what to read. `--fp32` measures the surfaces in float32 everywhere.
`--preset cpu --data-dir PATH --trigger 10 --out-dir DIR` profiles a CIFAR-10 run instead, reusing the clean model
cached in DIR (as `mesa-nb run` caches it); `--no-bf16` runs it in float32 (the `cpu` preset computes in bf16 where
the CPU has it natively).
Run: python scripts/profile_demo.py [--fp32] [--top 0] [--preset quick] [--trigger 170] [--data-dir PATH] [--out-dir DIR] [--no-bf16]
"""
import argparse
import cProfile
import os
import pstats
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")     # as the demo's kernel runs, before torch starts its threads


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fp32", action="store_true", help="measure every surface in float32 (the default: bf16 where native)")
    ap.add_argument("--top", type=int, default=0, help="also print the profile's N most expensive functions")
    ap.add_argument("--preset", default="quick"); ap.add_argument("--trigger", default="170"); ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out-dir", default=None, help="the run's experiment folder, where a cached clean model is reused (default: a temporary one)")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="compute in bf16 on a CPU that has it (default: the preset's)")
    a = ap.parse_args()
    from mesa_nb import defense
    from mesa_nb.cli import keep_freed_memory, make_config
    from mesa_nb.experiment import Run
    from mesa_nb.models import native_bf16
    keep_freed_memory()
    if a.fp32:
        exact = defense.surface
        defense.surface = lambda *args, **kw: exact(*args, **{**kw, "bf16": False})
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config(a.preset, trigger=a.trigger, seed=0, device="cpu", data_dir=a.data_dir, bf16=a.bf16, out_dir=a.out_dir or tmp)
        prof, t0 = cProfile.Profile(), time.perf_counter()
        prof.enable()
        run = Run(cfg); run.clean(); run.attack(); run.defend(); run.removals(); run.figures()
        prof.disable()
        total = time.perf_counter() - t0
    bf16 = cfg.bf16 and native_bf16("cpu")
    st = pstats.Stats(prof)
    cum = lambda module, name: sum(v[3] for k, v in st.stats.items() if k[0].endswith(f"mesa_nb{os.sep}{module}.py") and k[2] == name)
    own = lambda name: sum(v[2] for k, v in st.stats.items() if name in k[2])
    print(f"{cfg.preset} preset, trigger {cfg.trigger}; training and searches in {'bf16' if bf16 else 'float32'}, "
          f"surfaces in {'float32' if a.fp32 or not native_bf16('cpu') else 'bf16'}; {total:.1f}s under cProfile; stages (s): "
          + ", ".join(f"{k} {v:.1f}" for k, v in run.timing.items()))
    print("| where | seconds | share of the run |\n|---|---|---|")
    rows = [("residual surfaces (defense.surface)", cum("defense", "surface")), ("training and retraining (models.fit)", cum("models", "fit")),
            ("MESA searches, detection's included (search.search)", cum("search", "search")),
            ("single-trigger reversals (defense.reverse_trigger)", cum("defense", "reverse_trigger")),
            ("held-out evaluation, surfaces included (defense.evaluate)", cum("defense", "evaluate")),
            ("figures (Run.figures)", cum("experiment", "figures")),
            ("torch: convolutions, forward", own("torch.conv2d")), ("torch: backward passes", own("run_backward")),
            ("torch: max-pooling", own("torch.max_pool2d"))]
    for name, s in rows: print(f"| {name} | {s:.1f} | {s / total:.0%} |")
    if a.top: st.sort_stats("tottime").print_stats(a.top)


if __name__ == "__main__":
    main()
