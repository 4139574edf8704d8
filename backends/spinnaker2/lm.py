"""SpiNNaker 2's language-model feature (``SpiNNaker2Backend.language_model``, see :mod:`nmc.lm.target`).

Default pipeline (the published recipe): ``sparsify`` keeps ``density``
(default 0.05: 95 % of the weights pruned) of each EGRU layer's input and
recurrent weights by magnitude (the embedding and decoder stay dense),
optionally removes the ``prune_units`` least active fraction of units of
every layer on the calibration text, and stores CSR; ``quantize{bits=8}`` (the
lowering quantizes the kernels to int8 with one scale per gate row;
``--option egru_weights=float32`` keeps float32 weights and drops this pass;
``--option egru_weights=ternary`` makes it ``quantize{scheme=ternary,per_channel=true}``
— t ∈ {−1, 0, 1} × one absmean scale per gate row, packed 2-bit kernels, see
:mod:`.egru_packed` — and prunes nothing unless ``density`` is given: a ternary
model comes dense from quantisation-aware training, :mod:`nmc.nn.ternary`);
``partition`` splits units across PEs by output unit under the per-PE SRAM and
per-tick work budgets (rates from the calibration text); then place, route and
the per-PE EGRU kernels.

Host engines (:mod:`nmc.lm.host`): ``emulator`` steps every EGRU population
with the emulator's arithmetic (:func:`.egru.step_batch`), layer after layer
within a token, bit-equal to ``nmc run``'s aligned outputs on the same tokens;
``c`` runs the generated per-PE C kernels built with the host compiler
(:mod:`.ckernels`), bit-equal to the emulator; ``reference`` the float64
reference simulator.

Report (:mod:`nmc.lm.report`): the quantized stage (the kernels' dequantized
weights, exact nonlinearities), effective MACs per token on chip (for each
input or recurrent event, the kept weights of its column) and the placement:
PEs used and the predicted time per token per tick: per PE, cycles =
kept-weight MACs of the events it received × ``core.cycles_per_mac`` +
units × ``core.cycles_per_cell_update`` (counted from the generated kernels,
:mod:`.kernel_cycles`), over ``core.clock_hz`` — mean and
worst step of the run, max over PEs — against ``sys_tick``. One token enters
per tick; its logits leave ``latency`` ticks later.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from nmc import dynamics as D
from nmc.errors import OptionError
from nmc.lm import evaluate as E
from nmc.lm.target import LanguageModelTarget, TokenEngine

from .ckernels import CKernels
from .egru import step_batch
from .egru_packed import is_packed

DEFAULT_DENSITY = 0.05


def egru_populations(program) -> list:
    return [p for p in getattr(program, "populations", []) if p.model == "egru_kernel"]


class EmulatorEngine(TokenEngine):
    """Every EGRU population stepped with the emulator's float32 arithmetic."""

    def reset(self) -> None:
        self.pops = egru_populations(self.prog)
        self.state = {p.name: (np.zeros((1, p.size), np.float32), np.zeros((1, p.size), np.float32))
                      for p in self.pops}

    def feed(self, x: np.ndarray) -> np.ndarray:
        prog = self.prog
        (o, last), = prog.outputs.items()
        cur = {prog.inputs[k]: x.astype(np.float32) for k in prog.inputs}
        for p in self.pops:
            c, y = self.state[p.name]
            y, c = step_batch(p.kernel, c, cur[p.source], y)
            self.state[p.name] = (c, y)
            cur[p.name] = y
        return prog.read_out(o, cur[last])[0]


class CEngine(TokenEngine):
    """The generated per-PE C kernels, built with the host compiler (``ck``: the :class:`CKernels`)."""

    def __init__(self, bundle):
        self.ck = CKernels(bundle.program)
        super().__init__(bundle)

    def reset(self) -> None:
        self.ck.reset()

    def feed(self, x: np.ndarray) -> np.ndarray:
        prog = self.prog
        (o, last), = prog.outputs.items()
        ys = self.ck.step({prog.inputs[k]: x[0].astype(np.float32) for k in prog.inputs})
        return prog.read_out(o, ys[last][None, :])[0]


class S2LanguageModels(LanguageModelTarget):
    engines = ("emulator", "c", "reference")

    def default_pipeline(self, backend, options: dict) -> str:
        w = str(options.get("egru_weights") or "int8")
        ternary = w == "ternary"
        d = float(options.get("density") if options.get("density") is not None else
                  (1.0 if ternary else DEFAULT_DENSITY))
        pu = float(options.get("prune_units") or 0.0)
        if not 0 < d <= 1:
            raise OptionError(f"density must be in (0, 1], got {d}", hint="e.g. --option density=0.05 (95 % pruned)")
        if not 0 <= pu < 1:
            raise OptionError(f"prune_units must be in [0, 1), got {pu}")
        if w not in ("int8", "float32", "ternary"):
            raise OptionError(f"egru_weights must be int8, float32 or ternary, not {w!r}")
        sp = f"sparsify{{density={d},scope=layer,nodes=EGRU,format=csr" + (f",prune_units={pu}" if pu else "") + "}"
        if ternary:
            sp = "" if d == 1 and not pu else sp + ","
            return "normalize," + sp + "quantize{scheme=ternary,per_channel=true},partition,place,route"
        return "normalize," + sp + (",quantize{bits=8}" if w == "int8" else "") + ",partition,place,route"

    def _engine(self, name: str, bundle) -> TokenEngine:
        if name == "emulator":
            return EmulatorEngine(bundle)
        if name == "c":
            return CEngine(bundle)
        return super()._engine(name, bundle)

    def quantized_logits(self, program, tok: np.ndarray) -> np.ndarray | None:
        return kernel_logits(program, tok) if egru_populations(program) else None

    def chip_macs(self, program, rd: dict, tok: np.ndarray) -> dict[str, float]:
        pops = egru_populations(program)
        eff = {}
        if not pops:
            return eff
        steps = tok.shape[0] * tok.shape[1]
        V = pops[0].kernel["wx"].shape[1]
        for p in pops:
            kx = np.count_nonzero(p.kernel["wx"], axis=0)
            kh = np.count_nonzero(p.kernel["wh"], axis=0)
            xin = np.eye(V)[tok].reshape(-1, V) if p.source in program.inputs.values() else \
                np.asarray(rd[f"{p.source}.out"]).reshape(-1, kx.size)
            y = np.asarray(rd[f"{p.name}.out"]).reshape(tok.shape[0], tok.shape[1], -1)
            yprev = np.concatenate([np.zeros_like(y[:1]), y[:-1]]).reshape(-1, kh.size)
            eff[p.name] = float(((xin != 0) @ kx).sum() + ((yprev != 0) @ kh).sum()) / steps
        return eff

    def placement(self, program, rd: dict | None, tok: np.ndarray | None, spec,
                  reports: Mapping[str, dict] | None = None) -> dict:
        pops = egru_populations(program)
        if not pops:
            return super().placement(program, rd, tok, spec, reports)
        out = {"embedding": "on chip: folded into egru0's input weights (one event per token, its one-hot index)",
               "decoder": "host (float64 readout of the last layer's events)"}
        rep = (reports or {}).get("spinnaker2") or program.report or {}
        out["pes_used"] = rep.get("pes_used")
        out["sram_bytes_max"] = rep.get("sram_bytes_max")
        out["sram_bytes_limit"] = rep.get("sram_bytes_limit")
        out["latency_ticks"] = max(p.latency for p in program.populations)
        if spec is None or rd is None:
            return out
        clock = float(spec.get("core.clock_hz"))
        # the generated EGRU kernels' counted cycles (kernel_cycles.py), else the stock kernels' estimates
        cyc_syn = float(spec.get("core.cycles_per_mac", spec.get("core.cycles_per_synop")))
        cyc_neu = float(spec.get("core.cycles_per_cell_update", spec.get("core.cycles_per_neuron_update")))
        V = pops[0].kernel["wx"].shape[1]
        steps = tok.shape[0] * tok.shape[1]
        pe_ids = sorted({int(x) for p in pops for x in np.unique(p.pe)})
        col = {pe: i for i, pe in enumerate(pe_ids)}
        cyc = np.zeros((steps, len(pe_ids)))
        for p in pops:
            H = p.size
            xin = np.eye(V)[tok].reshape(steps, V) if p.source in program.inputs.values() else \
                np.asarray(rd[f"{p.source}.out"]).reshape(steps, -1)
            y = np.asarray(rd[f"{p.name}.out"]).reshape(tok.shape[0], tok.shape[1], -1)
            yprev = np.concatenate([np.zeros_like(y[:1]), y[:-1]]).reshape(steps, -1)
            # kept weights per (column, unit) over the unit's 3 gate rows; units summed per PE
            onto = np.zeros((H, len(pe_ids)))
            onto[np.arange(H), [col[int(x)] for x in p.pe]] = 1
            # a packed ternary kernel decodes all 3 codes per (column, unit), zeros included
            nz = (lambda a: np.ones(np.shape(a))) if is_packed(p.kernel) else (lambda a: (np.asarray(a) != 0) * 1.0)
            kx = nz(p.kernel["wx"]).reshape(3, H, -1).sum(0).T @ onto  # (n_in, PEs)
            kh = nz(p.kernel["wh"]).reshape(3, H, H).sum(0).T @ onto
            cyc += ((xin != 0) @ kx + (yprev != 0) @ kh) * cyc_syn + onto.sum(0) * cyc_neu
        mean = float(cyc.mean(0).max()) / clock
        worst = float(cyc.max()) / clock
        tick = float(program.sys_tick_s)
        out["time_per_token_per_tick_s"] = {"mean_step_max_pe": mean, "worst_step_max_pe": worst,
                                            "sys_tick": tick, "fits_tick": bool(worst <= tick)}
        return out


def kernel_logits(program, tok: np.ndarray) -> np.ndarray:
    """float64, exact nonlinearities, the program's (dequantized) kernel weights; (L, B, V)."""
    pops = egru_populations(program)
    (o, last), = program.outputs.items()
    V = pops[0].kernel["wx"].shape[1]
    x_in = torch.as_tensor(E.one_hot(tok, V))
    L, B = tok.shape
    W = {}
    for p in pops:
        k = p.kernel
        W[p.name] = [torch.as_tensor(np.asarray(k["wx"], float) * np.asarray(k["sx"], float)[:, None]),
                     torch.as_tensor(np.asarray(k["wh"], float) * np.asarray(k["sh"], float)[:, None]),
                     torch.as_tensor(np.asarray(k["bx"], float)), torch.as_tensor(np.asarray(k["bh"], float)),
                     torch.as_tensor(np.asarray(k["thr"], float))]
    state = {p.name: (torch.zeros(B, p.size, dtype=torch.float64), torch.zeros(B, p.size, dtype=torch.float64))
             for p in pops}
    ys = []
    with torch.no_grad():
        for t in range(L):
            cur = {program.inputs[k]: x_in[t] for k in program.inputs}
            for p in pops:
                c, y = state[p.name]
                y, c, _ = D.egru_step(cur[p.source], c, y, *W[p.name])
                state[p.name] = (c, y)
                cur[p.name] = y
            ys.append(cur[last].numpy())
    return program.read_out(o, np.stack(ys))


LANGUAGE_MODELS = S2LanguageModels()
