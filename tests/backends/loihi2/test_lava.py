"""Bit-exactness: the emitted lava_net.py run in Lava's fixed_pt simulator equals nmc's emulator,
spikes and integer voltages of every layer at every step. Each run: ≤ 10 Lava processes, ≤ 40 steps."""
from __future__ import annotations

import numpy as np
import pytest
from loihi2_nets import NETS, lower

from nmc.backends.loihi2 import BACKEND
from nmc.backends.loihi2.devices.lava_device import lava_available

_why = lava_available()
pytestmark = [pytest.mark.lava, pytest.mark.skipif(_why is not None, reason=f"import lava failed: {_why}")]


@pytest.mark.parametrize("net", list(NETS))
def test_lava_bit_exact_with_emulator(net):
    build, inp, opts = NETS[net]
    prog, _ = lower(build(), **opts)
    x = inp()
    names = [g.name for g in prog.groups]
    emu = BACKEND.device("emulator", prog, align=False).run({"input": x}, record=names)
    lava = BACKEND.device("lava", prog, align=False, timeout=240).run({"input": x}, record=names)
    assert set(emu) == set(lava)
    for k in emu:
        assert np.array_equal(emu[k], lava[k]), k
    assert any(emu[f"{g.name}.spikes"].any() for g in prog.groups if g.spiking)


def test_lava_batch_and_alignment():
    build, inp, opts = NETS["ff"]
    prog, _ = lower(build(), **opts)
    x = np.stack([inp(), inp()[::-1]], axis=1)[:12]
    emu = BACKEND.device("emulator", prog).run({"input": x})
    lava = BACKEND.device("lava", prog, timeout=240).run({"input": x})
    assert lava["output"].shape == (12, 2, 4)
    assert np.array_equal(emu["output"], lava["output"])
