"""Regenerate the results pages' tables from the run records they were made from: docs/results.md is never hand-edited.

Each generated block of a page sits between `<!-- generated: NAME -->` and `<!-- end: NAME -->`. For every block whose
records are in this checkout (the folder below), the block is rewritten from them: the command that made the records,
the commit and date of this regeneration, then the tables as `mesa-nb report` (or the named script) prints them, and the
figures copied to docs/images/. A block whose records are absent is kept as it is, with the commit that made it, so a
fresh clone can rebuild the page for what it has run. The prose around the blocks says what the tables show without
repeating their numbers.

Run: python scripts/results_page.py [--outputs outputs] [--page docs/results.md]
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return out + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _provenance(commands: list[str], folder: Path) -> str:
    cmd = "\n".join(commands)
    return (f"```bash\n{cmd}\n```\n\n*Regenerated from `{folder.name}` by `python scripts/results_page.py` at commit "
            f"{_commit()} on {datetime.date.today().isoformat()}.*\n")


def batch_block(folder: Path, commands: list[str], images: Path, stem: str) -> str | None:
    "A batch: the report's summary, the per-trigger tables of the original trigger and of the residual surface, its two figures."
    from mesa_nb.report import collect, per_trigger, summary_table, write_report
    records = collect(folder)
    if not records:
        return None
    write_report(folder)
    images.mkdir(parents=True, exist_ok=True)
    figs = []
    for fig, caption in (("after_defense.png", "Fig. 4: the original trigger's ASR after each defense, per trigger"),
                         ("surface.png", "The residual surface per trigger, beside Fig. 4")):
        if (folder/fig).is_file():
            shutil.copy2(folder/fig, images/f"{stem}-{fig.replace('_', '-')}")
            figs.append(f"![{caption}](images/{stem}-{fig.replace('_', '-')})")
    parts = [_provenance(commands, folder), summary_table(records)]
    if any(r.trigger for r in records):
        parts += ["Per trigger, the original trigger (each cell: ASR after the method, ≤ its worst retraining · robust accuracy · "
                  "clean accuracy; MESA's candidates and the ideal over their retraining seeds, the baseline over its runs):",
                  per_trigger(records, "trigger"),
                  "Per trigger, the residual surface (each cell: the largest excess ASR over the clean model of any member of the "
                  "family, in points, ≤ its worst retraining · the family's share at ASR ≥ 0.5):",
                  per_trigger(records, "surface")]
    return "\n\n".join(parts + figs) + "\n"


def calibration_block(folder: Path, commands: list[str], **_) -> str | None:
    "A recipe calibration: the table `calibrate_recipe.py --summary` prints from its calibration.json."
    from mesa_nb.core import read_json
    if not (folder/"calibration.json").is_file():
        return None
    spec = importlib.util.spec_from_file_location("calibrate_recipe", ROOT/"scripts"/"calibrate_recipe.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        mod.summary(read_json(folder/"calibration.json"), list(mod.RECIPES), mod.CALIBRATION)
    return _provenance(commands, folder) + "\n" + buf.getvalue().strip() + "\n"


def output_block(path: Path, commands: list[str], **_) -> str | None:
    "A script's printed output, kept in a file by the command that made it (`... > FILE`)."
    if not path.is_file():
        return None
    return _provenance(commands, path) + "\n```\n" + path.read_text(encoding="utf-8").strip() + "\n```\n"


PATH = "PATH/TO/cifar-10-batches-py"
BLOCKS = {   # name -> (folder under --outputs, how to render it, the commands that made the records)
    "cifar10-eval": ("cifar-eval", batch_block, [
        f"mesa-nb batch --preset cpu --no-bf16 --dataset cifar10 --data-dir {PATH} --trigger 0 7 color:1 bw:3:4 none --choose surface --workers 1 --out outputs/cifar-eval",
        f"mesa-nb batch --preset cpu --no-bf16 --dataset cifar10 --data-dir {PATH} --trigger blend:1:0.1 2 1 5 94 97 color:2 30 --workers 1 --out outputs/cifar-eval",
        f"mesa-nb batch --preset cpu --no-bf16 --dataset cifar10 --data-dir {PATH} --trigger none --seeds 1 --workers 1 --out outputs/cifar-eval"]),
    "cifar10-eval-surface-check": ("surface-check.log", output_block, [
        "python scripts/surface_check.py outputs/cifar-eval/cifar10-smallcnn-{0,1,2,5,7,30,94,97,color1,color2}-t0-s0 --images 128 "
        f"--data-dir {PATH} > outputs/surface-check.log"]),
    "calibration-cifar10": ("calibration", calibration_block, [
        f"python scripts/calibrate_recipe.py --no-bf16 --data-dir {PATH} --seeds 0 1"]),
    "flag-rules": ("flag_rules.txt", output_block, [
        "mesa-nb zoo --preset quick --clean 20 --backdoored 20 --zoo-seed 0 --out-dir outputs/zoo-digits-s0",
        "mesa-nb zoo --preset quick --clean 20 --backdoored 20 --zoo-seed 1 --out-dir outputs/zoo-digits-s1",
        f"mesa-nb zoo --preset cpu --no-bf16 --dataset cifar10 --data-dir {PATH} --clean 8 --backdoored 10 --zoo-seed 2 --workers 1 --out-dir outputs/zoo-cifar-s2",
        f"mesa-nb zoo --preset cpu --no-bf16 --dataset cifar10 --data-dir {PATH} --clean 8 --backdoored 10 --zoo-seed 3 --workers 1 --out-dir outputs/zoo-cifar-s3",
        "mesa-nb zoo --known-size --preset quick --clean 20 --backdoored 20 --zoo-seed 0 --out-dir outputs/zoo-digits-known-s0",
        "mesa-nb zoo --known-size --preset quick --clean 20 --backdoored 20 --zoo-seed 1 --out-dir outputs/zoo-digits-known-s1",
        f"mesa-nb zoo --known-size --preset cpu --dataset cifar10 --data-dir {PATH} --clean 8 --backdoored 10 --zoo-seed 2 --workers 1 --out-dir outputs/zoo-cifar-known-s2",
        "mesa-nb zoo --known-size --backdoors 2 --preset quick --clean 20 --backdoored 20 --zoo-seed 4 --out-dir outputs/zoo-digits-known2-s4",
        "mesa-nb zoo --backdoors 2 --preset quick --clean 20 --backdoored 20 --zoo-seed 4 --out-dir outputs/zoo-digits-mask2-s4",
        f"mesa-nb zoo --known-size --backdoors 2 --preset cpu --dataset cifar10 --data-dir {PATH} --clean 2 --backdoored 6 --zoo-seed 2 --workers 1 --out-dir outputs/zoo-cifar-known2-s2",
        "mesa-nb run --preset quick --trigger 170@0,color:3@5 --out-dir outputs/multi",
        "mesa-nb run --preset quick --trigger 170@0,color:3@5 --mask --out-dir outputs/multi-mask",
        f"mesa-nb run --preset cpu --no-bf16 --dataset cifar10 --data-dir {PATH} --trigger 170@0,color:3@5 --out-dir outputs/multi-cifar",
        "python scripts/flag_rules.py outputs/zoo-digits-s0 outputs/zoo-digits-s1 outputs/zoo-cifar-s2 outputs/zoo-cifar-s3 "
        "outputs/zoo-digits-known-s0 outputs/zoo-digits-known-s1 outputs/zoo-cifar-known-s2 outputs/zoo-digits-known2-s4 "
        "outputs/zoo-digits-mask2-s4 outputs/zoo-cifar-known2-s2 outputs/multi "
        "outputs/multi-mask outputs/multi-cifar outputs/cifar-eval > outputs/flag_rules.txt"]),
    "calibration-digits": ("calibration-digits", calibration_block, [
        "python scripts/calibrate_recipe.py --preset quick --clean-dir outputs/digits-eval --out outputs/calibration-digits --seeds 0 1 2"]),
}


def regenerate(page: Path, outputs: Path) -> list[str]:
    "Rewrite every block of `page` whose records are under `outputs`; the names of the blocks rewritten."
    text = page.read_text(encoding="utf-8")
    done = []
    for name, (sub, render, commands) in BLOCKS.items():
        pat = re.compile(rf"(<!-- generated: {re.escape(name)} -->\n)(.*?)(<!-- end: {re.escape(name)} -->)", re.S)
        if not pat.search(text):
            continue
        body = render(outputs/sub, commands, images=page.parent/"images", stem=name)
        if body is None:
            print(f"{name}: no records in {outputs/sub}; kept as it is")
            continue
        text = pat.sub(lambda m: m.group(1) + "\n" + body + "\n" + m.group(3), text)
        done.append(name)
        print(f"{name}: regenerated from {outputs/sub}")
    tmp = page.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8"); tmp.replace(page)
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outputs", type=Path, default=ROOT/"outputs", help="the folder holding the record folders")
    ap.add_argument("--page", type=Path, default=ROOT/"docs"/"results.md")
    a = ap.parse_args(argv)
    if not a.page.is_file():
        print(f"results_page: {a.page} does not exist; run from a checkout of the project", file=sys.stderr)
        return 2
    regenerate(a.page, a.outputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
