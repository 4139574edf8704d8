"""Apply the one-line Python 3.11 fix to an installed lava-nc 0.10.0.

lava/magma/compiler/var_model.py declares a dataclass field with a mutable
default (``ByteEncoder = ByteEncoder()``), which Python 3.11 rejects
("mutable default ... use default_factory"), so ``import lava`` fails. The fix
turns it into ``field(default_factory=ByteEncoder)``. Idempotent; exits 0 when
lava is not installed or already fixed.
"""
import importlib.util
import pathlib
import re
import sys

spec = importlib.util.find_spec("lava")
if spec is None or not spec.submodule_search_locations:
    print("patch_lava: lava-nc not installed, nothing to do")
    sys.exit(0)
path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "magma" / "compiler" / "var_model.py"
src = path.read_text()
pat = re.compile(r"^(\s+\w+\s*:\s*ByteEncoder\s*=\s*)ByteEncoder\(\)", re.M)
src = pat.sub(r"\1field(default_factory=ByteEncoder)", src)
if not re.search(r"^from dataclasses import .*\bfield\b", src, re.M):
    # after `from __future__` (which must stay first), next to the other dataclasses import
    src = re.sub(r"^from dataclasses import (.*)$", r"from dataclasses import \1, field", src, count=1, flags=re.M)
if src == path.read_text():
    print("patch_lava: already fixed")
else:
    path.write_text(src)
    print(f"patch_lava: fixed {path}")
