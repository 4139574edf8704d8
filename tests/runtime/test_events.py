"""Event arrays: dense / NIR / wire / npz round trips; nothing dropped; bad input typed."""
from __future__ import annotations

import nir
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nmc.errors import EventFormatError, InputFileError
from nmc.runtime import events as ev


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 12), st.integers(1, 4), st.integers(1, 5)),
              elements=st.sampled_from([0.0, 1.0])))
def test_binary_dense_round_trip(x):
    e = ev.from_dense(x)
    assert np.all(e["v"] == 1)
    assert np.array_equal(ev.to_dense(e, x.shape[0], x.shape[1:]), x)
    assert np.array_equal(ev.unpack(ev.pack(e, graded=False), graded=False), e)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 10), st.integers(1, 6)),
              elements=st.floats(-3, 3, allow_nan=False, width=32)))
def test_graded_round_trips(x):
    e = ev.from_dense(x, graded=True)
    assert np.array_equal(ev.to_dense(e, x.shape[0], x.shape[1:]), x)
    assert np.array_equal(ev.unpack(ev.pack(e, graded=True), graded=True), e)
    d = ev.to_nir_event_data(e, x.shape[1], 1e-3, graded=True)
    assert isinstance(d, nir.ValuedEventData)
    assert np.array_equal(ev.from_nir_event_data(d, 1e-3), ev.sort_events(e))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_fuzzed_bytes_only_raise_event_format_errors(buf, graded):
    try:
        e = ev.unpack(buf, graded=graded)
    except EventFormatError:
        return
    assert len(buf) == len(e) * (12 if graded else 8)


def test_duplicates_are_summed_and_out_of_range_is_refused():
    e = ev.events([0, 0, 2], [1, 1, 0])
    assert ev.to_dense(e, 3, (2,)).tolist() == [[0, 2], [0, 0], [1, 0]]
    with pytest.raises(EventFormatError) as err:
        ev.to_dense(ev.events([0, 5], [0, 0]), 3, (2,))
    assert "1 event(s) outside the 3 timesteps" in err.value.one_line()
    with pytest.raises(EventFormatError):
        ev.to_dense(ev.events([0], [7]), 3, (2,))
    with pytest.raises(EventFormatError):
        ev.events([-1], [0])
    with pytest.raises(EventFormatError):
        ev.events([0, 1], [0])
    with pytest.raises(EventFormatError):
        ev.events([0], [0], [np.nan])
    with pytest.raises(EventFormatError):
        ev.pack(ev.events([0], [0], [0.5]), graded=False)


def test_windows_and_nir_times():
    e = ev.events([0, 3, 4, 9], [0, 1, 2, 0])
    w = ev.split_windows(e, 4, steps=10)
    assert [len(x) for x in w] == [2, 1, 1] and w[1]["t"].tolist() == [0] and w[2]["t"].tolist() == [1]
    assert np.array_equal(ev.concat(w, 4), ev.sort_events(e))
    d = nir.EventData(idx=np.array([0]), time=np.array([0.0015]), n_neurons=2, t_max=0.01)
    with pytest.raises(EventFormatError):
        ev.from_nir_event_data(d, 1e-3)
    assert ev.from_nir_event_data(d, 1e-3, snap=True)["t"].tolist() == [2]


def test_npz_helpers(tmp_path):
    ev.save_npz(tmp_path / "a.npz", {"b": np.ones(2), "a": np.zeros(3)})
    ev.save_npz(tmp_path / "b.npz", {"a": np.zeros(3), "b": np.ones(2)})
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()  # deterministic
    assert set(ev.load_inputs_npz(tmp_path / "a.npz")) == {"a", "b"}
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputFileError) as err:
        ev.load_inputs_npz(tmp_path / "obj.npz")
    assert "pickle" in err.value.one_line()
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(InputFileError):
        ev.load_inputs_npz(tmp_path / "junk.npz")
