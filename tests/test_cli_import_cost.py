"""``nmc --help`` stays fast: the command line's modules import the heavy packages (torch, numba,
scipy, networkx, Ray, Lava) only inside the commands that use them."""
from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "numba", "scipy", "networkx", "ray", "lava")


def test_help_imports_no_heavy_package():
    code = ("import sys\nfrom nmc.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print('heavy: ' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Usage:" in out.stdout and out.stdout.splitlines()[-1] == "heavy: "
