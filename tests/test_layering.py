"""The layers of nmc, enforced (issue #18): imports point down, and nothing imports in a cycle.

Lowest first; a module may import its own layer and the layers below it:

    foundation  nmc.<module> (ir, nodes, errors, hw, serialize, annotations, dynamics, reference, ...)
    models      nmc.nn, nmc.lm
    frontends   nmc.frontends          passes   nmc.passes      (side by side: neither imports the other)
    backends    nmc.backends
    runtime     nmc.runtime
    driver      nmc.driver, nmc.cli, and the package ``nmc`` itself (its lazy ``nmc.compile`` & co.)

Every import statement counts, at module level or inside a function (a
function-local import that reaches up a layer is still a dependency), found
by reading the source (``ast``), so nothing is imported to check it. The
modules are those of the packages ``pyproject.toml`` installs, read from
their directories (``passes/`` is ``nmc.passes``, ...).
"""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (layer, its packages); lowest first. Packages in one tuple entry separated by "|" are side by side.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("nmc",)),
    ("models", ("nmc.nn", "nmc.lm")),
    ("frontends|passes", ("nmc.frontends", "nmc.passes")),
    ("backends", ("nmc.backends",)),
    ("runtime", ("nmc.runtime",)),
    # nmc serve's model repository and the server it builds read bundle directories and drive
    # them as `nmc run` does: they sit with the driver, above the runtime they use
    ("driver", ("nmc.driver", "nmc.cli", "nmc.runtime.serve.repository", "nmc.runtime.serve.server")),
]
#: side-by-side packages of one layer that must not import each other
INDEPENDENT = (("nmc.frontends", "nmc.passes"),)

#: imports that break the layering today, each with the change that removes it. The test fails
#: when one of them is gone, so that its entry is deleted here too.
KNOWN: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    local: bool          # inside a function
    guarded: bool        # under ``if TYPE_CHECKING:``

    def where(self) -> str:
        return f"{self.importer} line {self.line} imports {self.imported}" + (" (function-local)" if self.local else "")


def package_dirs() -> dict[str, Path]:
    """{package: directory} from pyproject's setuptools config (top-level packages only)."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {pkg: ROOT / d for pkg, d in cfg["package-dir"].items()
            if pkg.count(".") <= 1 and (ROOT / d).is_dir() and pkg != "nmc.hw_configs"}


def all_modules() -> dict[str, tuple[Path, bool]]:
    """{module name: (file, is package)} of every .py file nmc installs."""
    mods: dict[str, tuple[Path, bool]] = {}
    dirs = package_dirs()
    for pkg, d in dirs.items():
        for f in sorted(d.rglob("*.py")):
            rel = f.relative_to(d)
            if any(part.startswith(".") for part in rel.parts):
                continue
            parts = list(rel.with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            name = ".".join([pkg, *parts])
            if pkg == "nmc" and parts and f"nmc.{parts[0]}" in dirs and f"nmc.{parts[0]}" != "nmc":
                continue  # a directory installed as another package (none today)
            mods[name] = (f, is_pkg)
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, file: Path, is_pkg: bool, modules) -> list[Import]:
    """Every nmc module ``name`` imports: ``import a.b`` → a.b; ``from a import b`` → a.b when
    that is a module, else a; relative imports resolved against the module's package."""
    tree = ast.parse(file.read_text(), filename=str(file))
    package = name if is_pkg else name.rpartition(".")[0]
    out: list[Import] = []

    def add(target: str, node, local, guarded):
        if target == "nmc" or target.startswith("nmc."):
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]
            if target in modules and target != name:
                out.append(Import(name, target, node.lineno, local, guarded))

    def visit(node, local, guarded):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for a in child.names:
                    add(a.name, child, local, guarded)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                for a in child.names:
                    sub = f"{mod}.{a.name}"
                    add(sub if sub in modules else mod, child, local, guarded)
            visit(child, local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)),
                  guarded or (isinstance(child, ast.If) and _is_type_checking(child.test)))

    visit(tree, False, False)
    return out


def all_imports() -> list[Import]:
    mods = all_modules()
    return [i for name, (f, is_pkg) in mods.items() for i in imports_of(name, f, is_pkg, mods)]


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, the package that placed it there); the package ``nmc`` itself is the driver's face."""
    if module == "nmc":
        return len(LAYERS) - 1, "nmc"
    best = (-1, "", "")
    for i, (_, pkgs) in enumerate(LAYERS):
        for p in pkgs:
            if (module == p or module.startswith(p + ".")) and len(p) > len(best[1]):
                best = (i, p, p)
    assert best[0] >= 0, f"{module} is in no layer: add its package to LAYERS in {__file__}"
    return best[0], best[2]


def violations(imports: list[Import]) -> list[tuple[Import, str]]:
    bad = []
    for imp in imports:
        (li, pi), (lj, pj) = layer_of(imp.importer), layer_of(imp.imported)
        if lj > li:
            bad.append((imp, f"{LAYERS[li][0]} → {LAYERS[lj][0]}"))
        elif li == lj and pi != pj and any({pi, pj} == set(g) for g in INDEPENDENT):
            bad.append((imp, f"{pi} and {pj} are side by side"))
    return bad


def _known(imp: Import) -> bool:
    return any(imp.importer.startswith(a) and imp.imported.startswith(b) for a, b in KNOWN)


def test_every_module_has_a_layer():
    mods = all_modules()
    assert len(mods) > 100 and {"nmc.ir", "nmc.passes.manager", "nmc.backends.spinnaker2.lower",
                                "nmc.runtime.session", "nmc.driver.api"} <= set(mods)
    for m in mods:
        layer_of(m)


def test_imports_point_down_the_layers():
    bad = [(imp, why) for imp, why in violations(all_imports()) if not _known(imp)]
    assert not bad, "imports against the layering (a module may import only its own layer and the ones below):\n" + \
        "\n".join(f"  {imp.where()}  [{why}]" for imp, why in bad)


def test_known_exceptions_still_exist():
    found = {(a, b) for a, b in KNOWN for imp, _ in violations(all_imports())
             if imp.importer.startswith(a) and imp.imported.startswith(b)}
    gone = set(KNOWN) - found
    assert not gone, f"these layering exceptions no longer occur: delete them from KNOWN in {__file__}: {sorted(gone)}"


def test_the_check_sees_function_local_and_upward_imports(tmp_path):
    """The checker itself: a function-local import up a layer, resolved relatively, is reported."""
    f = tmp_path / "m.py"
    f.write_text("import nmc.errors\n\ndef f():\n    from ...driver import api\n    return api\n")
    mods = {"nmc.passes.sub.m": (f, False), "nmc.driver.api": (f, False), "nmc.errors": (f, False)}
    imps = imports_of("nmc.passes.sub.m", f, False, mods)
    assert [(i.imported, i.local) for i in imps] == [("nmc.errors", False), ("nmc.driver.api", True)]
    (imp, why), = violations(imps)
    assert imp.imported == "nmc.driver.api" and why == "frontends|passes → driver"
    assert violations([Import("nmc.frontends.torch", "nmc.passes.quantize", 3, True, False)])


#: names that live in one module and must be imported from it, not through a module that uses them
#: (``CoreLimits`` & co. once came through ``nmc.passes.rules``: runtime/energy.py, bench/)
HOME = {"nmc.target_model": ("CoreLimits", "TargetModel", "spec_value", "near_square", "index_bits_for",
                             "synapse_bytes")}


def borrowed_names(file: Path, package: str) -> list[str]:
    """``from M import N`` and ``M.N`` (M a module bound by an import) in ``file`` where N is one of
    :data:`HOME`'s names and M is not its home; ``package``: the file's package for relative imports."""
    tree = ast.parse(file.read_text(), filename=str(file))
    owner = {n: home for home, names in HOME.items() for n in names}
    bound: dict[str, str] = {}   # local name -> module it stands for
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                if a.name in owner and mod != owner[a.name]:
                    out.append(f"{file.relative_to(ROOT)} line {node.lineno}: {a.name} from {mod}")
                bound[a.asname or a.name] = f"{mod}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    bound[a.asname] = a.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in owner and isinstance(node.value, ast.Name):
            mod = bound.get(node.value.id)
            if mod is not None and mod.startswith("nmc") and mod != owner[node.attr]:
                out.append(f"{file.relative_to(ROOT)} line {node.lineno}: {node.value.id}.{node.attr} ({mod})")
    return out


def test_target_model_names_come_from_where_they_live():
    bad = []
    for name, (f, is_pkg) in all_modules().items():
        bad += borrowed_names(f, name if is_pkg else name.rpartition(".")[0])
    for d in ("tests", "bench", "examples"):
        for f in sorted((ROOT / d).rglob("*.py")):
            bad += borrowed_names(f, "")
    assert not bad, "import these names from their home module (HOME in tests/test_layering.py):\n  " + "\n  ".join(bad)


def test_the_borrowed_names_check_sees_the_old_path(tmp_path):
    f = ROOT / "tests" / "_borrowed_probe.py"   # under ROOT for relative_to; removed below
    try:
        f.write_text("from nmc.passes.rules import CoreLimits\nfrom nmc.target_model import TargetModel\n"
                     "from . import rules\n\ndef g(x: rules.CoreLimits):\n    return rules.max_per_core\n")
        found = borrowed_names(f, "nmc.passes")
    finally:
        f.unlink()
    assert found == ["tests/_borrowed_probe.py line 1: CoreLimits from nmc.passes.rules",
                     "tests/_borrowed_probe.py line 5: rules.CoreLimits (nmc.passes.rules)"]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, out = set(), [], []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_no_import_cycle_at_module_level():
    """Module-level imports (what runs when a module is first imported) form no cycle.
    A package importing its own submodules is not a cycle (Python imports the package first)."""
    edges: dict[str, set[str]] = {}
    for imp in all_imports():
        if not imp.local and not imp.guarded:
            edges.setdefault(imp.importer, set()).add(imp.imported)
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    cycles = _cycles(edges)
    assert not cycles, "import cycles (module-level):\n" + "\n".join(
        "  " + " → ".join(c) + "\n    " + "\n    ".join(i.where() for i in all_imports() if not i.local and
                                                     i.importer in c and i.imported in c) for c in cycles)


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module imported as the first nmc module of a clean import state (one child process; nmc's
    modules are dropped from sys.modules before each): no circular-import error, whatever the order."""
    names = sorted(m for m in all_modules() if not m.endswith(".__main__"))
    code = (
        "import importlib, sys, traceback\n"
        "bad = []\n"
        f"for name in {names!r}:\n"
        "    for k in [k for k in sys.modules if k == 'nmc' or k.startswith('nmc.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as e:\n"
        "        bad.append(f'{name}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, "modules that fail to import first:\n" + r.stdout + r.stderr[-3000:]
