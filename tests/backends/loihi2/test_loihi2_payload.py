"""The one-pass input check (payload.payload_of) gives the numpy checks' verdict and payloads."""
from __future__ import annotations

import numpy as np
import pytest

from nmc.backends.loihi2 import payload as P


def _cases():
    rng = np.random.default_rng(0)
    spikes = (rng.random((7, 3, 5)) < 0.3).astype(np.float64)
    graded = rng.integers(-128, 128, (7, 3, 5))
    yield spikes, 0, P.OK
    yield spikes.astype(bool), 0, P.OK
    yield spikes.astype(np.uint8), 0, P.OK
    yield graded, 8, P.OK
    yield graded.astype(np.float32), 8, P.OK
    yield graded, 0, P.NOT_BINARY
    yield graded, 7, P.OUT_OF_RANGE
    bad = graded.astype(np.float64)
    bad[3, 1, 2] = 0.5
    yield bad, 8, P.NOT_INTEGER
    both = bad.copy()
    both[0, 0, 0] = 1e6                     # out of range too: the integer rule is reported first
    yield both, 8, P.NOT_INTEGER
    yield np.array([[[2 ** 63 + 2048]]], dtype=np.uint64), 8, P.OUT_OF_RANGE
    yield -spikes, 0, P.NOT_BINARY


@pytest.mark.parametrize("i", range(11))
def test_payload_equals_numpy_checks(i):
    a, bits, want = list(_cases())[i]
    x, code = P.payload_of(a, bits)
    ref, ref_code = P._numpy(np.asarray(a), bits)
    assert code == ref_code == want
    if want == P.OK:
        assert x.dtype == np.int64 and x.shape == a.shape and np.array_equal(x, ref)
