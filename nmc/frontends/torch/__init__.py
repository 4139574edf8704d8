"""PyTorch frontend: nmc.nn, snnTorch and Norse models → nmc Graph; safe files.

Three modules: :mod:`.convert` (one layer → nodes, the mappings below),
:mod:`.trace` (:func:`from_module`: the layer structure, Sequential or
``torch.fx``), :mod:`.files` (:func:`save`, :func:`load_file`); the file layout
and the rebuildable module (:func:`load_module`) are :mod:`nmc.nn.persist`'s.

**Modules** (:func:`from_module`): a ``nn.Sequential`` (or Norse
``SequentialState``) is converted layer by layer; any other module is traced
with ``torch.fx`` (neuron layers as leaves; ``+`` of two branches becomes
summed edges). Layers: ``nn.Linear`` → Affine/Linear, ``nn.Conv1d/2d`` →
Conv1d/2d, ``nn.AvgPool2d`` → AvgPool2d, ``nn.Flatten`` → Flatten,
``nn.Identity``/``nn.Dropout`` skipped; ``nn.LayerNorm`` (last dimension) →
``nmc.LayerNorm``; nmc.nn LIF/RLIF/CubaLIF/IF/LI/EGRU; the nmc.nn state-space
layers DiagSSM/SSMBlock/DiagSSMStack/StochasticSpikingSSM → ``nmc.DiagSSM`` /
``nmc.StochasticSSMNeuron`` nodes (:mod:`.ssm`);
snnTorch ``Leaky``/``RLeaky``/``Synaptic``; Norse ``LIFBoxCell``/``LIFCell``/
``LICell``. ``nn.MaxPool2d`` is refused (no exact spiking equivalent); other
modules raise :class:`UnsupportedNodeError` naming their path.

Exact mappings (tested against the libraries):

* snnTorch ``Leaky(β, threshold)`` → LIF with τ = dt/(1−β), R = τ/dt (Euler:
  v ← βv + x), reset per ``reset_mechanism``. snnTorch's default
  ``reset_delay=True`` applies the reset one step after the spike; the
  reference resets in the spike's step (``reset_delay=False``): such layers are
  converted with a compile warning naming them.
* ``Synaptic(α, β)`` → CubaLIF with τ_syn = dt/(1−α), w_in = τ_syn/dt.
* ``RLeaky`` → LIF ⇄ Affine(recurrent); its recurrent bias is moved into the
  feed-forward layer's bias (same value every step, and nonzero at t = 0 as in
  snnTorch) when that layer is an Affine.
* Norse ``LIFBoxCell`` → LIF (R = 1); ``LIFCell``/``LICell`` (Norse 1.1: the
  input jumps into the current, the membrane integrates that current, then
  the current decays) → CubaLIF/CubaLI with R = 1, w_in = τ_syn/dt (Euler).
  With j_t = i_{t−1} + x_t Norse's current is j_t = (1 − dt/τ_syn)·j_{t−1} + x_t,
  the reference's Euler current, and v_t integrates j_t in both: no delay.
  (Older Norse releases integrated v with the old current and added the input
  after, i.e. the input one step late; 1.1, installed here, does not.)
  ``LIFRecurrentCell`` → Linear(W_in) → CubaLIF ⇄ Linear(W_rec) (autapses
  zeroed unless ``autapses=True``).

**Files**: :func:`save` writes a dict that ``torch.load(weights_only=True)``
reads (format tag, the graph as plain data with tensors, the module's
constructor config and state_dict). :func:`load_file` reads it without
unpickling code; a file that needs unpickling is refused
(:class:`UntrustedPickleError`) unless ``trust_pickle``. An EvNN-layout
state_dict (``kernel``, ``recurrent_kernel``, ``bias``, ``recurrent_bias``,
``thr``, optionally prefixed per layer) becomes EGRU nodes. ``.pt2``
(``torch.export``) programs of nmc.nn / torch layers are accepted, read by
:mod:`nmc.frontends.pt2` without unpickling (``torch.export.load`` only with
``trust_pickle``). Type and class strings from a file resolve through explicit
allow-lists (:func:`nmc.nodes.node_class`, :func:`nmc.nn.persist.build`), never ``getattr``.
"""
from __future__ import annotations

from nmc.nn.persist import FORMAT, VERSION, load_module

from .convert import DEFAULT_DT
from .files import load_file, save
from .trace import from_module

__all__ = ["DEFAULT_DT", "FORMAT", "VERSION", "from_module", "load_file", "load_module", "save"]
