"""Cycle counts of the generated EGRU PE kernels, counted from the compiled code.

The energy and time model of SpiNNaker 2 (``hw_configs/spinnaker2.toml``:
``core.cycles_per_mac``, ``core.cycles_per_cell_update``) charges the
generated kernels (:mod:`.egru`) what they execute. :func:`count` derives
those figures from the kernel source itself: the header nmc writes into every
program (:data:`.egru.HEADER`) is compiled with the host C compiler at the
kernels' own flags (``-O2 -std=c99 -ffp-contract=off -fno-fast-math``, as
:mod:`.ckernels` builds them) plus ``-fno-tree-vectorize`` (the Cortex-M4F has
no vector float unit, so each element is one scalar iteration there too), to
assembly, and the instructions of the loop bodies are counted statically:

* ``mac``: the innermost loop of ``nmc_egru_acc`` with int8 weights (one kept
  weight of a received event's column: load weight and row, convert, multiply,
  accumulate, store, loop);
* ``event``: the rest of that function's per-event loop (the column lookup),
  per received event and PE;
* ``ternary_code``: per 2-bit code of a packed ternary kernel
  (``nmc_egru_acc_t2``, :mod:`.egru_packed`), the longest path once round its
  innermost loop: the loop branches on the code (0 skipped, +1 adds, −1
  subtracts), so :func:`paths` walks every path from the loop head back to it
  and the count is the longest (``ternary_paths`` lists them all: with gcc 12
  16 for a 0, 17 for a +1, 19 for a −1 — decode = byte load, shift by 2·(r % 4),
  mask, then one or two compares, the float load/add/store of a nonzero code
  and the loop test — against the int8 MAC's 11);
* ``cell_update``: per unit and step, the body of ``nmc_egru_step``'s unit
  loop (three gates, two sigmoids and a tanh by table interpolation, the
  threshold, the spike branch; the largest innermost loop) plus three
  iterations of its accumulator-clearing loop (three gate rows per unit; the
  smallest innermost loop, two stores).

A loop body is the code between a loop's head label and its backward jump, all
paths laid out inline included (the spike branch, the tables' saturation
tests), so a count is the longest common path, not an average. Method error:
these are x86-64 instructions at one cycle each, not Thumb-2 cycles on the
M4F: x86's memory operands fold a load into an arithmetic instruction (fewer
instructions), while the M4F takes 2 cycles per isolated load, 1–3 per taken
branch and 14 per float division (none in these loops) — the counts are taken
as the M4F's cycles within about −30 %/+50 %, graded ``est``. The test
``tests/backends/spinnaker2/test_kernel_cycles.py`` ties the spec's figures to
this count, and a kernel that does more work counts more.

``python -m nmc.backends.spinnaker2.kernel_cycles`` prints the counts.
"""
from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from nmc.errors import DeviceError

from .ckernels import compiler
from .egru import HEADER

FLAGS = ["-O2", "-std=c99", "-ffp-contract=off", "-fno-fast-math", "-fno-tree-vectorize",
         "-fno-asynchronous-unwind-tables", "-S"]
WRAPPERS = r"""
#include "nmc_egru.h"
void nmc_count_acc(float *acc, const uint32_t *ptr, const uint16_t *row, const void *val,
                   const uint32_t *ei, const float *ev, int ne) { nmc_egru_acc(acc, ptr, row, val, 0, ei, ev, ne); }
int nmc_count_step(nmc_egru_pe *p, const uint32_t *xi, const float *xv, int nx,
                   const uint32_t *yi, const float *yv, int ny, uint32_t *oi, float *ov) {
    return nmc_egru_step(p, xi, xv, nx, yi, yv, ny, oi, ov);
}
void nmc_count_t2(float *acc, const uint8_t *w, int R, const uint32_t *ei, const float *ev, int ne) {
    nmc_egru_acc_t2(acc, w, R, ei, ev, ne);
}
"""
_LABEL = re.compile(r"^(\.L\w+):")
_FUNC = re.compile(r"^([A-Za-z_]\w*):")


def assembly(header: str = HEADER) -> str:
    """The kernels' header and the counting wrappers compiled to x86-64 assembly (AT&T syntax)."""
    cc = compiler()
    if cc is None:
        raise DeviceError("no host C compiler (cc/gcc) to count the EGRU kernels' cycles", hint="install gcc")
    with tempfile.TemporaryDirectory(prefix="nmc-kc-") as d:
        (Path(d) / "nmc_egru.h").write_text(header)
        (Path(d) / "count.c").write_text(WRAPPERS)
        r = subprocess.run([cc, *FLAGS, "-o", "-", "count.c"], cwd=d, capture_output=True, text=True)
    if r.returncode != 0:
        raise DeviceError(f"the EGRU kernel header did not compile: {r.stderr.strip()[:400]}")
    return r.stdout


def functions(asm: str) -> dict[str, list[tuple[str, str]]]:
    """{function: [("label", name) | ("insn", mnemonic, operands)...]} in code order."""
    out: dict[str, list] = {}
    cur = None
    for line in asm.splitlines():
        if (m := _FUNC.match(line)) and not line.startswith(".L"):
            cur = out.setdefault(m.group(1), [])
        elif cur is None:
            continue
        elif m := _LABEL.match(line):
            cur.append(("label", m.group(1)))
        elif line[:1] in " \t" and line.strip() and not line.strip().startswith("."):
            parts = line.split(None, 1)
            cur.append(("insn", parts[0], parts[1].strip() if len(parts) > 1 else ""))
    return out


def loops(body: list) -> list[tuple[int, int]]:
    """(head index, backward-jump index) of every loop: a jump to a label placed before it."""
    where = {e[1]: i for i, e in enumerate(body) if e[0] == "label"}
    return [(where[e[2]], i) for i, e in enumerate(body)
            if e[0] == "insn" and e[1].startswith("j") and e[2] in where and where[e[2]] < i]


def insns(body: list, lo: int, hi: int) -> int:
    return sum(1 for e in body[lo:hi + 1] if e[0] == "insn")


def _innermost(ls: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [a for a in ls if not any(b != a and a[0] <= b[0] and b[1] <= a[1] for b in ls)]


def paths(body: list, head: int, hi: int, lo: int | None = None) -> list[int]:
    """Instructions of every path through the loop whose head is ``body[head]`` and whose last
    backward jump is ``body[hi]``, its code laid out in ``body[lo..hi]`` (``lo`` = ``head`` unless
    an arm is placed before the head): from the head, following fall-throughs and both arms of each
    conditional jump, back to the head (a path that leaves ``[lo, hi]`` exits the loop and is not
    counted). Sorted ascending; a loop body without branches has one path."""
    lo = head if lo is None else lo
    where = {e[1]: i for i, e in enumerate(body) if e[0] == "label"}
    out: list[int] = []

    def walk(i: int, n: int, seen: frozenset) -> None:
        while True:
            if i == head and n:
                out.append(n)
                return
            if i < lo or i > hi or i in seen:   # left the loop, or an inner cycle (none in these loops)
                return
            seen = seen | {i}
            e = body[i]
            if e[0] == "label":
                i += 1
                continue
            n += 1
            if e[1].startswith("j") and e[2] in where:
                if e[1] != "jmp":
                    walk(i + 1, n, seen)   # not taken
                i = where[e[2]]
                continue
            i += 1

    walk(head, 0, frozenset())
    return sorted(out)


def _loop_region(ls: list[tuple[int, int]], fn: str) -> tuple[int, int, int]:
    """(head, last backward jump, first instruction) of the innermost loop of ``fn``: a compiler may
    lay a branching loop out as several overlapping loops (an arm placed before the head jumping
    back into it), so the innermost loops that overlap the last one's range are one region, whose
    head is the target of the last backward jump."""
    inner = _innermost(ls)
    if not inner:
        raise DeviceError(f"expected a loop in {fn}, found none")
    hi = max(b for _, b in inner)
    head = next(a for a, b in inner if b == hi)
    if any(a > hi or b < head for a, b in inner):
        raise DeviceError(f"expected one innermost loop region in {fn}, found {len(inner)} loops apart")
    return head, hi, min(a for a, _ in inner)


def count(header: str = HEADER) -> dict:
    """Instructions per kept-weight MAC, per received event (column lookup), per packed ternary code
    (longest path) and per unit update."""
    fns = functions(assembly(header))
    t2 = fns["nmc_count_t2"]
    tp = paths(t2, *_loop_region(loops(t2), "nmc_egru_acc_t2"))
    acc, step = fns["nmc_count_acc"], fns["nmc_count_step"]
    la = loops(acc)
    inner = _innermost(la)
    if len(inner) != 1:
        raise DeviceError(f"expected one innermost loop in nmc_egru_acc (int8), found {len(inner)}")
    mac = insns(acc, *inner[0])
    outer = [a for a in la if a != inner[0] and a[0] <= inner[0][0] and inner[0][1] <= a[1]]
    event = insns(acc, *outer[0]) - mac if outer else 0
    inner = sorted(_innermost(loops(step)), key=lambda a: insns(step, *a))
    # the unit loop is the largest innermost loop; clearing acc_x[r], acc_h[r] (two stores) the smallest
    unit, clear = inner[-1], inner[0]
    return {"mac": mac, "event": event, "ternary_code": tp[-1], "ternary_paths": tp,
            "unit_loop": insns(step, *unit), "clear_row": insns(step, *clear),
            "cell_update": insns(step, *unit) + 3 * insns(step, *clear), "compiler": compiler(),
            "flags": " ".join(FLAGS)}


if __name__ == "__main__":
    for k, v in count().items():
        print(f"{k}: {v}")
