"""Packaging for mesa_nb, driven by settings.ini (nbdev 2 classic layout)."""
import shlex
from configparser import ConfigParser
from pathlib import Path

import setuptools
from setuptools.command.build_py import build_py

here = Path(__file__).parent
config = ConfigParser(delimiters=["="])
config.read(here / "settings.ini", encoding="utf-8")
cfg = config["DEFAULT"]

for key in "lib_name version description author author_email license min_python git_url".split():
    assert key in cfg, f"settings.ini is missing `{key}`"

licenses = {"apache2": ("Apache Software License 2.0", "OSI Approved :: Apache Software License")}
lic = licenses.get(cfg["license"].lower(), (cfg["license"], None))
statuses = ["1 - Planning", "2 - Pre-Alpha", "3 - Alpha", "4 - Beta", "5 - Production/Stable"]
py_versions = "3.10 3.11 3.12 3.13".split()
min_python = cfg["min_python"]


def reqs(key):
    return shlex.split(cfg.get(key, ""))


class BuildWithTemplates(build_py):
    "Ship the papermill templates (nbs/experiments, nbs/reports) inside the package, as mesa_nb/templates/."

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads them from nbs/ in the checkout
            return
        dest = Path(self.build_lib) / cfg["lib_path"] / "templates"
        self.mkpath(str(dest))
        for folder in ("experiments", "reports"):
            for notebook in sorted((here / "nbs" / folder).glob("*.ipynb")):
                self.copy_file(str(notebook), str(dest / notebook.name))


test_reqs = reqs("test_requirements")
setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    keywords=cfg.get("keywords", ""),
    author=cfg["author"],
    author_email=cfg["author_email"],
    license=lic[0],
    url=cfg["git_url"],
    classifiers=[
        "Development Status :: " + statuses[int(cfg["status"]) - 1],
        "Intended Audience :: " + cfg["audience"].title(),
        "Natural Language :: " + cfg["language"].title(),
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ]
    + [f"Programming Language :: Python :: {v}" for v in py_versions[py_versions.index(min_python):]]
    + ([f"License :: {lic[1]}"] if lic[1] else []),
    packages=setuptools.find_packages(include=[cfg["lib_path"], cfg["lib_path"] + ".*"]),
    include_package_data=True,
    install_requires=reqs("requirements"),
    extras_require={"test": test_reqs, "dev": test_reqs + reqs("dev_requirements"), "dask": reqs("dask_requirements"),
                    "docs": reqs("docs_requirements")},
    python_requires=">=" + min_python,
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    zip_safe=False,
    cmdclass={"build_py": BuildWithTemplates},
    entry_points={
        "console_scripts": cfg.get("console_scripts", "").split(),
        "nbdev": [f'{cfg["lib_path"]}={cfg["lib_path"]}._modidx:d'],
    },
)
