"""Every Python package of the repository is listed in pyproject.toml, so a
normal (non-editable) install ships it under nmc.*."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP = {"nmc": "nmc", "passes": "nmc.passes", "backends": "nmc.backends", "runtime": "nmc.runtime",
       "hw_configs": "nmc.hw_configs"}


def test_all_packages_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = set()
    for top, pkg in TOP.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((pkg, *rel)))
    assert found <= listed, f"missing from pyproject packages: {sorted(found - listed)}"
    assert cfg["package-dir"]["nmc.passes"] == "passes" and "nmc.hw_configs" in cfg["package-data"]
