"""Build the documentation site from the notebooks: `make docs` (executed) or `make docs-check` (CI).

Every notebook under `nbs/` becomes a page, the README the landing page, the Markdown pages of `docs/` (results,
reliability, speed) pages of their own, and each module of `mesa_nb` an API page written from its docstrings and docments (the parameter comments). The pages are
rendered by mkdocs with mkdocs-jupyter, a pure-Python renderer: nbdev's own `nbdev_docs` needs
Quarto. With `--execute` (the default) each notebook runs first, as `nbdev_test` runs it (same skip
flags, same working folder), so the pages carry their outputs and figures; `--no-execute` renders
them as committed, which is what CI checks: that every notebook has a page and every public name of
`mesa_nb` is documented. Build source and site go to `_docs/` (git-ignored).

    python scripts/build_docs.py [--no-execute] [--workers N] [--out _docs]
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re
import shutil
import sys
import time
from configparser import ConfigParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"
DOCS = ROOT / "docs"
README_LINES = 200                    # the front door stays short; measured tables live in docs/
LINK = re.compile(r"(!?\[[^\]]*\])\(([^)\s]+)\)")


def settings() -> dict:
    cfg = ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini", encoding="utf-8")
    return dict(cfg["DEFAULT"])


def notebooks() -> list[Path]:
    "Every notebook of the project, in reading order (library notebooks, then templates and reports)."
    found = [p for p in NBS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and not p.name.startswith("_")]
    return sorted(found, key=lambda p: (len(p.relative_to(NBS).parts), str(p.relative_to(NBS))))


def module_of(nb: dict) -> str | None:
    for cell in nb["cells"]:
        m = re.search(r"^#\|\s*default_exp\s+(\S+)", "".join(cell["source"]), re.M)
        if cell["cell_type"] == "code" and m:
            return m.group(1)
    return None


# --- executing a notebook as nbdev_test does, keeping the outputs --------------------------------

def execute(src: Path, dest: Path, skip_flags: list[str]) -> tuple[str, float, str]:
    "Run notebook `src` (cells with a skip flag left out) and write it with its outputs to `dest`."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from nbdev.process import NBProcessor

    os.environ.setdefault("IN_TEST", "1")
    nb = NBProcessor(src, process=True).nb
    flags = set(skip_flags)

    def no_eval(cell):
        if cell.cell_type != "code" or "nbdev_export(" in cell.source:
            return True
        directives = getattr(cell, "directives_", {}) or {}
        return directives.get("eval:", [""])[0].lower() == "false" or bool(flags & directives.keys())

    start, shell, error = time.time(), CaptureShell(src), ""
    cwd = os.getcwd()
    try:
        os.chdir(src.parent)
        shell.run_all(nb, exc_stop=True, preproc=no_eval)
    except Exception:
        error = shell.prettytb(fname=src)
    finally:
        os.chdir(cwd)
    # NBProcessor parsed the directives out of the sources; write the original sources back with outputs.
    original = read_nb(src)
    for cell, ran in zip(original.cells, nb.cells):
        if cell.cell_type == "code":
            cell["outputs"] = ran.get("outputs", [])
            cell["execution_count"] = ran.get("execution_count")
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_nb(original, dest)
    return str(src.relative_to(NBS)), time.time() - start, error


# --- turning notebooks into pages -------------------------------------------------------------------

def page_notebook(path: Path) -> None:
    "Drop `#| hide` cells and the `#|` directive lines, so a page shows what a reader needs."
    import json

    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = []
    for cell in nb["cells"]:
        lines = "".join(cell["source"]).splitlines(keepends=True)
        directives = [l for l in lines if l.startswith("#|")]
        if any(re.match(r"#\|\s*hide\b", d) for d in directives):
            continue
        if cell["cell_type"] == "code":
            body = "".join(l for l in lines if not l.startswith("#|")).strip("\n")
            if not body and not cell.get("outputs"):
                continue
            cell["source"] = body
        cells.append(cell)
    nb["cells"] = cells
    nb.setdefault("metadata", {})["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")


def title_of(path: Path) -> str:
    import json

    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        m = re.search(r"^#\s+(.+)$", "".join(cell["source"]), re.M)
        if cell["cell_type"] == "markdown" and m:
            return m.group(1).strip()
    return path.stem


def title_of_md(path: Path) -> str:
    m = re.search(r"^#\s+(.+)$", path.read_text(encoding="utf-8"), re.M)
    return m.group(1).strip() if m else path.stem


# --- the API reference from docstrings and docments -------------------------------------------------

def _signature(name: str, obj) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        sig = "(...)"
    if not callable(obj):
        return f"{name} = {_short(repr(obj))}"
    kind = "class" if inspect.isclass(obj) else "def"
    if len(name) + len(sig) > 90:  # one parameter per line, as a formatter would
        head, _, ret = sig.rpartition(")")
        params = [p.strip() for p in _split_params(head[1:])]
        sig = "(\n    " + ",\n    ".join(params) + ",\n)" + ret
    return f"{kind} {name}{sig}"


def _split_params(text: str) -> list[str]:
    "Split a parameter list at its top-level commas (defaults may hold brackets and strings)."
    out, depth, quote, cur = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    return out + ([cur] if cur.strip() else [])


def _short(text: str, n: int = 300) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _params(obj) -> str:
    "A Markdown table of the parameters that carry a docment (the comment after each parameter)."
    from fastcore.docments import docments

    try:
        docs = docments(obj, full=True)
    except Exception:
        return ""
    rows = []
    for pname, info in docs.items():
        if pname in ("self", "return") or not info.get("docment"):
            continue
        default = info.get("default", inspect._empty)
        anno = info.get("anno", inspect._empty)
        default = "" if default is inspect._empty else _code(_short(repr(default), 60))
        anno = "" if anno in (inspect._empty, type(None)) else _code(str(getattr(anno, "__name__", anno)))
        meaning = " ".join(str(info["docment"]).split()).replace("<", "&lt;").replace("|", "&#124;")
        rows.append(f"| {_code(pname)} | {anno} | {default} | {meaning} |")
    if not rows:
        return ""
    return "\n| Parameter | Type | Default | Meaning |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"


def _code(text: str) -> str:
    "Inline code that is safe inside a Markdown table cell (a `|` would end the cell)."
    return "<code>" + text.replace("&", "&amp;").replace("<", "&lt;").replace("|", "&#124;") + "</code>"


def _entry(name: str, obj, level: int = 2) -> list[str]:
    out = [f"{'#' * level} {name}" + " {#" + name.replace('.', '-') + "}", "", "```python", _signature(name.split(".")[-1], obj), "```", ""]
    doc = inspect.getdoc(obj) if (callable(obj) or inspect.ismodule(obj)) else None
    if doc:
        out += [doc, ""]
    if callable(obj):
        out.append(_params(obj))
    return out


def api_page(module: str, notebook: str | None) -> tuple[str, list[str]]:
    "The Markdown page of `mesa_nb.<module>` and the public names it documents."
    mod = importlib.import_module(f"mesa_nb.{module}")
    names = list(getattr(mod, "__all__", []))
    lines = [f"# mesa_nb.{module}", ""]
    if mod.__doc__:
        lines += [mod.__doc__.strip(), ""]
    if notebook:
        lines += [f"Source and worked examples: [the notebook](../{notebook}).", ""]
    for name in names:
        obj = getattr(mod, name)
        lines += _entry(name, obj)
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not (inspect.isfunction(member) or isinstance(member, (classmethod, staticmethod, property))):
                    continue
                fn = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
                if fn is not None and inspect.getdoc(fn):
                    lines += _entry(f"{name}.{attr}", fn, level=3)
    return "\n".join(lines) + "\n", names


# --- the landing page ----------------------------------------------------------------------------------

def landing(readme: str, pages: dict[str, str], repo_url: str) -> str:
    "The README with its links pointed at the site's pages, its images copied, anything else to the repository."

    def fix(m):
        label, target = m.group(1), m.group(2)
        if re.match(r"[a-z]+:|#", target):
            return m.group(0)
        path, _, anchor = target.partition("#")
        if path in pages:
            return f"{label}({pages[path]}{'#' + anchor if anchor else ''})"
        return f"{label}({repo_url}/blob/main/{target})"

    return LINK.sub(fix, readme)


def build(out: Path, run: bool, workers: int) -> int:
    cfg = settings()
    src, site = out / "src", out / "site"
    shutil.rmtree(out, ignore_errors=True)
    (src / "api").mkdir(parents=True)
    nbs = notebooks()
    rel = {p: p.relative_to(NBS) for p in nbs}
    failed = []
    if run:
        from fastcore.parallel import parallel

        flags = cfg.get("tst_flags", "").split()
        print(f"executing {len(nbs)} notebooks on {workers} worker(s)…", flush=True)
        results = parallel(_execute_one, [(p, src / "notebooks" / rel[p], flags) for p in nbs], n_workers=workers)
        for name, seconds, error in results:
            print(f"  {name}: {seconds:.0f} s{' FAILED' if error else ''}")
            if error:
                failed.append(name)
                sys.stderr.write(error + "\n")
    else:
        for p in nbs:
            (src / "notebooks" / rel[p]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, src / "notebooks" / rel[p])
    for p in nbs:
        page_notebook(src / "notebooks" / rel[p])
    doc_pages = sorted(DOCS.glob("*.md"))
    for d in doc_pages:
        shutil.copy2(d, src / d.name)
    if (DOCS / "images").is_dir():
        shutil.copytree(DOCS / "images", src / "images")

    import json

    nav_nbs, nav_api, public = [], [], {}
    for p in nbs:
        page = f"notebooks/{rel[p].as_posix()}"
        nav_nbs.append({title_of(src / page): page})
        module = module_of(json.loads(p.read_text(encoding="utf-8")))
        if module:
            text, names = api_page(module, f"{page}")
            (src / "api" / f"{module}.md").write_text(text, encoding="utf-8")
            nav_api.append({f"mesa_nb.{module}": f"api/{module}.md"})
            public[module] = names
    pages = {f"nbs/{rel[p].as_posix()}": f"notebooks/{rel[p].as_posix()}" for p in nbs}
    pages.update({f"docs/{d.name}": d.name for d in doc_pages})
    pages.update({f"docs/images/{i.name}": f"images/{i.name}" for i in (DOCS / "images").glob("*")})
    (src / "index.md").write_text(landing((ROOT / "README.md").read_text(encoding="utf-8"), pages, cfg["git_url"]), encoding="utf-8")

    config = {
        "site_name": cfg["title"],
        "site_description": cfg["description"],
        "repo_url": cfg["git_url"],
        "docs_dir": str(src),
        "site_dir": str(site),
        "use_directory_urls": False,
        "theme": {"name": "material", "font": False, "features": ["navigation.sections", "content.code.copy"]},
        "plugins": [{"search": {}}, {"mkdocs-jupyter": {"execute": False, "include_source": True, "ignore_h1_titles": False}}],
        "markdown_extensions": ["tables", "attr_list", "admonition", "toc", {"pymdownx.highlight": {}}, "pymdownx.superfences", {"pymdownx.arithmatex": {"generic": True}}],
        "nav": [{"Home": "index.md"}, {"Pages": [{title_of_md(d): d.name} for d in doc_pages]}, {"Notebooks": nav_nbs}, {"API reference": nav_api}],
        "validation": {"links": {"not_found": "warn", "anchors": "ignore", "unrecognized_links": "ignore"}},
    }
    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config

    (out / "mkdocs.yml").write_text(json.dumps(config, indent=1), encoding="utf-8")
    cwd = os.getcwd()
    try:                                       # mkdocs-jupyter keeps its cache under the working folder: the build's own
        os.chdir(out)
        mkdocs_build(load_config(str(out / "mkdocs.yml"), strict=True))
    finally:
        os.chdir(cwd)
    return check(site, nbs, rel, public, failed)


def _execute_one(job):
    return execute(*job)


def check(site: Path, nbs: list[Path], rel: dict, public: dict[str, list[str]], failed: list[str]) -> int:
    "Every notebook and docs page has a page, every image a page shows exists, every public name of `mesa_nb` a documented entry."
    import mesa_nb

    problems = [f"notebook failed to run: {n}" for n in failed]
    readme = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    if readme > README_LINES:
        problems.append(f"README.md has {readme} lines, more than {README_LINES}: move results to docs/results.md (scripts/results_page.py)")
    for d in sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]:
        if d.parent == DOCS and not (site / d.with_suffix(".html").name).is_file():
            problems.append(f"no page for docs/{d.name}")
        for m in LINK.finditer(d.read_text(encoding="utf-8")):
            target = m.group(2).partition("#")[0]
            if not re.match(r"[a-z]+:", target) and target and not (d.parent / target).exists():
                problems.append(f"{d.relative_to(ROOT)} links to {target}, which does not exist")
    for p in nbs:
        page = site / "notebooks" / rel[p].with_suffix(".html")
        if not page.is_file():
            problems.append(f"no page for {rel[p]}")
    modules = {m.name for m in (ROOT / "mesa_nb").glob("*.py") if not m.name.startswith("_")}
    for m in sorted(modules):
        names = getattr(importlib.import_module(f"mesa_nb.{m[:-3]}"), "__all__", [])
        if not names:
            continue
        page = site / "api" / f"{m[:-3]}.html"
        text = page.read_text(encoding="utf-8") if page.is_file() else ""
        problems += [f"mesa_nb.{m[:-3]}.{n} has no entry in api/{m[:-3]}.html" for n in names if f'id="{n}"' not in text]
    for msg in problems:
        print(msg, file=sys.stderr)
    n_names = sum(len(v) for v in public.values())
    print(f"{'FAILED' if problems else 'ok'}: {len(nbs)} notebook pages, {len(public)} API pages with {n_names} names "
          f"(mesa_nb {mesa_nb.__version__}) in {site}")
    return 1 if problems else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-execute", dest="run", action="store_false", help="render the notebooks as committed (no outputs)")
    ap.add_argument("--workers", type=int, default=2, help="notebooks executed in parallel")
    ap.add_argument("--out", type=Path, default=ROOT / "_docs", help="build folder: src/ pages, site/ the HTML")
    args = ap.parse_args(argv)
    return build(args.out.resolve(), args.run, args.workers)


if __name__ == "__main__":
    sys.exit(main())
