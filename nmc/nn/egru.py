"""Event-based GRU (EGRU) layers: EvNN's semantics, trainable, exportable.

:class:`EGRU` runs :func:`nmc.dynamics.egru_step` (equations in
:class:`nmc.nodes.EGRU`) over a sequence (T, B, input_size) → (T, B, hidden)
graded events y. Weights use NIR's (out, in) orientation: ``w_x`` (3H, in),
``w_h`` (3H, H), gates stacked z, r, g.

State across calls: with ``carry_state=True`` (default) both the cell c and the
events y persist until ``reset_state()``; ``evnn_restart=True`` reproduces
EvNN, which restarts c at 0 on every forward call and carries only y.

The threshold ϑ is kept positive: the forward pass uses ``thr.clamp(min=thr_min)``
(with ϑ ≤ 0 the subtractive reset adds to the state and long streams diverge).
The spike uses the Heaviside step forward and EvNN's pseudo-derivative
``γ·max(0, 1 − ε|ĉ − ϑ|)`` backward (``dampening`` γ, ``support`` ε).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from nmc import dynamics as D


class _EgruSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, eps):
        ctx.save_for_backward(x)
        ctx.gamma, ctx.eps = gamma, eps
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ctx.gamma * torch.clamp(1 - ctx.eps * x.abs(), min=0), None, None


class EGRU(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, *, thr_init: float = 0.3, thr_min: float = 0.05,
                 dampening: float = 0.7, support: float = 1.0, carry_state: bool = True, evnn_restart: bool = False):
        super().__init__()
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        H = self.hidden_size
        k = 1 / math.sqrt(H)
        self.w_x = nn.Parameter(torch.empty(3 * H, input_size).uniform_(-k, k))
        self.w_h = nn.Parameter(torch.empty(3 * H, H).uniform_(-k, k))
        self.b_x = nn.Parameter(torch.zeros(3 * H))
        self.b_h = nn.Parameter(torch.zeros(3 * H))
        self.thr = nn.Parameter(torch.full((H,), float(thr_init)))
        self.thr_min, self.dampening, self.support = float(thr_min), float(dampening), float(support)
        self.carry_state, self.evnn_restart = carry_state, evnn_restart
        self.state: dict[str, torch.Tensor] = {}
        self.last_o: torch.Tensor | None = None

    def config(self) -> dict:
        return {"input_size": self.input_size, "hidden_size": self.hidden_size, "thr_min": self.thr_min,
                "dampening": self.dampening, "support": self.support, "carry_state": self.carry_state,
                "evnn_restart": self.evnn_restart}

    def reset_state(self) -> None:
        self.state = {}

    def threshold(self) -> torch.Tensor:
        return self.thr.clamp(min=self.thr_min)

    def _spike(self, x):
        return _EgruSpike.apply(x, self.dampening, self.support)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One timestep: x (B, input_size) → y (B, hidden)."""
        B = x.shape[0]
        c = self.state.get("c")
        y = self.state.get("y")
        if c is None or c.shape[0] != B:
            c = x.new_zeros(B, self.hidden_size)
        if y is None or y.shape[0] != B:
            y = x.new_zeros(B, self.hidden_size)
        y, c, o = D.egru_step(x, c, y, self.w_x, self.w_h, self.b_x, self.b_h, self.threshold(), self._spike)
        self.state = {"c": c, "y": y}
        self.last_o = o
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (T, B, input_size) → y (T, B, hidden). Also sets ``self.activity`` = mean of o."""
        if not self.carry_state:
            self.state = {}
        elif self.evnn_restart and "c" in self.state:
            self.state = {"c": torch.zeros_like(self.state["c"]), "y": self.state["y"]}
        ys, os_ = [], []
        for t in range(x.shape[0]):
            ys.append(self.step(x[t]))
            os_.append(self.last_o)
        self.activity = torch.stack(os_).mean()
        return torch.stack(ys)

    @classmethod
    def from_evnn_state_dict(cls, sd: dict, **kw) -> "EGRU":
        """Build from an EvNN layer's state_dict (``kernel`` (in, 3H), ``recurrent_kernel``
        (H, 3H), ``bias``, ``recurrent_bias`` (3H), ``thr`` (H); gates z, r, g; x·W)."""
        kernel = torch.as_tensor(sd["kernel"])
        rec = torch.as_tensor(sd["recurrent_kernel"])
        m = cls(kernel.shape[0], rec.shape[0], evnn_restart=kw.pop("evnn_restart", True), **kw).to(kernel.dtype)
        with torch.no_grad():
            m.w_x.copy_(kernel.T)
            m.w_h.copy_(rec.T)
            m.b_x.copy_(torch.as_tensor(sd["bias"]).reshape(-1))
            m.b_h.copy_(torch.as_tensor(sd["recurrent_bias"]).reshape(-1))
            m.thr.copy_(torch.as_tensor(sd["thr"]).reshape(-1))
        return m


class EGRULanguageModel(nn.Module):
    """Embedding → stacked EGRU layers → linear decoder (optionally tied to the embedding).

    ``forward(tokens (T, B)) → logits (T, B, vocab)``; ``activity()`` gives the
    per-layer fraction of units emitting per step of the last forward pass.
    ``chars`` (optional) is the character vocabulary (token i = ``chars[i]``);
    it is saved with the model so a compiled bundle can read and write text.

    As a graph (:func:`nmc.frontends.torch.from_module`): Input (one-hot token,
    ``vocab``) → ``embed`` Linear (the embedding table as a (embed, vocab)
    weight) → ``egru0`` … → ``decoder`` Affine → Output (logits), with
    ``meta["lm"]`` = {"vocab", "chars", "embed", "decoder"}.
    """

    def __init__(self, vocab: int, embed: int, hidden: list[int] | tuple[int, ...], *, tie: bool = False,
                 chars: str | None = None, **egru_kw):
        super().__init__()
        self.vocab, self.embed_size, self.hidden = int(vocab), int(embed), [int(h) for h in hidden]
        if chars is not None and len(chars) != self.vocab:
            raise ValueError(f"chars has {len(chars)} characters but vocab is {self.vocab}")
        self.chars = chars
        self.tie = bool(tie)
        self.embed = nn.Embedding(vocab, embed)
        sizes = [embed, *self.hidden]
        self.layers = nn.ModuleList(EGRU(sizes[i], sizes[i + 1], **egru_kw) for i in range(len(self.hidden)))
        if tie and self.hidden[-1] != embed:
            raise ValueError("a tied decoder needs the last hidden size to equal the embedding size")
        self.decoder = nn.Linear(self.hidden[-1], vocab)
        if tie:
            self.decoder.weight = self.embed.weight
        self.egru_kw = egru_kw

    def config(self) -> dict:
        cfg = {"vocab": self.vocab, "embed": self.embed_size, "hidden": self.hidden, "tie": self.tie, **self.egru_kw}
        if self.chars is not None:
            cfg["chars"] = self.chars
        return cfg

    def reset_state(self) -> None:
        for layer in self.layers:
            layer.reset_state()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        for layer in self.layers:
            h = layer(h)
        return self.decoder(h)

    def activity(self) -> list[float]:
        """Each layer's mean event rate of its last forward (as numbers: no graph kept)."""
        return [float(torch.as_tensor(getattr(layer, "activity", float("nan"))).detach()) for layer in self.layers]
