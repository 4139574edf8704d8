"""Two `nmc serve` replicas (child processes) behind one entry point (the router):
sessions spread over both, each pinned to its replica; when one replica dies its
sessions end and new sessions reach the live one. Loopback only, bounded."""
from __future__ import annotations

import numpy as np
import pytest

import nmc
from nets import ff_lif, spikes
from nmc.errors import DeviceError
from nmc.runtime.serve.router import Router
from serve_proc import ServeProcess

pytestmark = pytest.mark.timeout(120)


def test_two_replicas_behind_one_entry_point(tmp_path):
    repo = tmp_path / "repo"
    nmc.compile(ff_lif(), target="spinnaker2", dt=1e-3, integrator="euler", reset="zero", output=repo / "ff" / "1")
    x = spikes((8,), T=20, seed=2, p=0.4)
    with nmc.open(repo / "ff" / "1", window=2) as s:
        want = s.run_dense({"input": x})["output"]
    with ServeProcess(repo, "--devices", "4") as a, ServeProcess(repo, "--devices", "4") as b:
        router = Router([a.address, b.address]).start()
        try:
            h, p = router.address
            cs = [nmc.connect(h, p, model="ff", window=2) for _ in range(4)]
            assert router.served == [2, 2]  # fewest open connections first: both replicas used
            for c in cs:  # every session pinned to its replica, state carried across windows
                np.testing.assert_array_equal(c.run_dense({"input": x})["output"][:20], want)
            a.p.kill()  # replica a dies
            a.p.wait(10)
            lost = 0
            for c in cs:
                try:
                    c.step({})
                    c.close()
                except DeviceError:
                    lost += 1
            assert lost == 2  # exactly the sessions on the dead replica end
            for _ in range(3):  # new sessions reach the live replica
                with nmc.connect(h, p, model="ff", window=2) as c:
                    np.testing.assert_array_equal(c.run_dense({"input": x})["output"][:20], want)
            assert router.served[1] == 5
        finally:
            router.stop()
