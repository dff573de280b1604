"""Run a command and fail if it changed any file under mesa_nb/ or nbs/.

`python scripts/check_unchanged.py nbdev_export` proves the library is in sync with the notebooks;
`... nbdev_clean` proves the notebooks are committed clean. Works with uncommitted edits too: it
compares the tree before and after the command, not against git.
"""
import hashlib
import subprocess
import sys
from pathlib import Path

ROOTS = ("mesa_nb", "nbs")


def snapshot():
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for root in ROOTS for p in sorted(Path(root).rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts
        and not (root == "nbs" and p.suffix == ".py")
    }


before = snapshot()
subprocess.run(sys.argv[1:], check=True)
after = snapshot()
changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
if changed:
    print(f"`{' '.join(sys.argv[1:])}` changed {len(changed)} file(s); run it and commit the result:",
          *changed, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"`{' '.join(sys.argv[1:])}`: no change ({len(after)} files)")
