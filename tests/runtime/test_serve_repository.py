"""`nmc serve REPO/`: models by name and version, load/unload at run time without
dropping sessions, the device pool's queue and its "busy, retry after" answer,
and dynamic batching through the server (loopback only, bounded in time)."""
from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

import nmc
from nets import ff_lif, recurrent_cubalif, spikes
from nmc.cli import main
from serve_proc import ServeProcess
from nmc.errors import DeviceError, OptionError, ServerBusyError
from nmc.runtime.serve.repository import ModelRepository
from nmc.runtime.serve.server import RepositoryServer
from nmc.runtime.server import SessionServer
from nmc.runtime.session import Session

pytestmark = pytest.mark.timeout(120)
KW = dict(dt=1e-3, integrator="euler", reset="zero")


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory):
    """ff/1, ff/2 (another net), rec/1, plus things a repository may hold that are not models."""
    r = tmp_path_factory.mktemp("repo")
    nmc.compile(ff_lif(), target="spinnaker2", output=r / "ff" / "1", **KW)
    nmc.compile(ff_lif(), target="loihi2", output=r / "ff" / "2", **dict(KW, reset="subtract"))
    nmc.compile(recurrent_cubalif(), target="spinnaker2", output=r / "rec" / "1", **KW)
    (r / "README.txt").write_text("not a model")
    (r / "ff" / "latest").mkdir()  # not a version number: skipped
    return r


def _fresh(repo_dir, tmp_path):
    d = tmp_path / "repo"
    shutil.copytree(repo_dir, d)
    return d


def _serve(repo, **kw):
    srv = RepositoryServer(repo, port=0, idle_timeout=20, **kw)
    srv.start()
    return srv


def _local(path, x, window=2):
    with nmc.open(path, window=window) as s:
        return s.run_dense({"input": x})["output"]


def test_clients_open_sessions_by_model_name_and_version(repo_dir, tmp_path):
    logs = []
    srv = _serve(ModelRepository(repo_dir, log=logs.append))
    try:
        h, p = srv.address
        x8, x6 = spikes((8,), T=20, seed=1, p=0.4), spikes((6,), T=20, seed=2, p=0.4)
        with nmc.connect(h, p, model="ff", window=2) as c:  # newest version
            assert (c.model, c.model_version, c.target) == ("ff", 2, "loihi2")
            np.testing.assert_array_equal(c.run_dense({"input": x8})["output"][:20], _local(repo_dir / "ff/2", x8))
        with nmc.connect(h, p, model="ff", model_version=1, window=2) as c:
            assert (c.model_version, c.target) == (1, "spinnaker2")
            np.testing.assert_array_equal(c.run_dense({"input": x8})["output"][:20], _local(repo_dir / "ff/1", x8))
        with nmc.connect(h, p, model="rec", window=2) as c:
            np.testing.assert_array_equal(c.run_dense({"input": x6})["output"][:20], _local(repo_dir / "rec/1", x6))
        with pytest.raises(DeviceError, match=r"protocol violation\): name a model: this server serves "
                                              r"ff \(versions 1, 2\), rec \(versions 1\)"):
            nmc.connect(h, p)
        with pytest.raises(DeviceError, match=r"no model 'nope' here"):
            nmc.connect(h, p, model="nope")
        with pytest.raises(DeviceError, match=r"model 'ff' has no version 7 \(versions: 1, 2\)"):
            nmc.connect(h, p, model="ff", model_version=7)
    finally:
        srv.stop()
    assert any("skipped README.txt" in m for m in logs) and any("skipped ff/latest" in m for m in logs)


def test_single_bundle_server_refuses_another_model_name(repo_dir):
    srv = SessionServer(nmc.load(repo_dir / "rec" / "1"), port=0, name="rec")
    srv.start()
    try:
        h, p = srv.address
        with nmc.connect(h, p) as c:  # no model named: as before
            assert c.model == "rec"
        with nmc.connect(h, p, model="rec", model_version=1):
            pass
        with pytest.raises(DeviceError, match=r"serves model 'rec' version 1 only, not 'ff'"):
            nmc.connect(h, p, model="ff")
    finally:
        srv.stop()


def test_load_and_unload_at_run_time_keep_open_sessions(repo_dir, tmp_path):
    d = _fresh(repo_dir, tmp_path)
    srv = _serve(ModelRepository(d))
    try:
        h, p = srv.address
        x = spikes((8,), T=24, seed=3, p=0.4)
        want = _local(repo_dir / "ff/1", x)
        a = nmc.connect(h, p, model="ff", model_version=1, window=2)   # its version is removed mid-stream
        b = nmc.connect(h, p, model="rec", window=2)                   # another model: untouched
        from nmc.runtime.session import dense_windows
        from nmc.runtime import events as ev
        wins = list(dense_windows({"input": x}, 2))
        outs = [a.step(w)["output"] for w in wins[:5]]
        shutil.rmtree(d / "ff" / "1")
        shutil.copytree(repo_dir / "rec" / "1", d / "rec2" / "3")
        changes = srv.rescan()
        assert changes["unloaded"] == ["ff/1"] and changes["loaded"] == ["rec2/3"], changes
        outs += [a.step(w)["output"] for w in wins[5:]]  # the session of the unloaded version runs on
        got = ev.to_dense(ev.concat(outs, 2), len(outs) * 2, (want.shape[1],))
        np.testing.assert_array_equal(got[:24], want)
        assert b.step({})  # the other model's session too
        with pytest.raises(DeviceError, match=r"model 'ff' has no version 1"):
            nmc.connect(h, p, model="ff", model_version=1)
        with nmc.connect(h, p, model="rec2") as c:
            assert c.model_version == 3
        retired = srv.repo.retired
        assert len(retired) == 1  # devices of ff/1 kept while its session is open
        a.close()
        b.close()
        for _ in range(100):  # the server closes the session just after its final STATS: bounded wait
            if not srv.repo.retired:
                break
            time.sleep(0.05)
        assert srv.repo.retired == []  # ... and closed after it
    finally:
        srv.stop()


def test_a_corrupt_version_is_skipped_and_the_rest_served(repo_dir, tmp_path):
    d = _fresh(repo_dir, tmp_path)
    f = next((d / "rec" / "1").glob("program/*"))
    f.write_bytes(f.read_bytes() + b"x")
    logs = []
    repo = ModelRepository(d, log=logs.append)
    changes = repo.scan()
    assert "does not match" in changes["failed"]["rec/1"], changes
    assert sorted(changes["loaded"]) == ["ff/1", "ff/2"]
    assert any(m.startswith("repository: rec/1 not loaded:") for m in logs)


def test_full_queue_answers_busy_with_retry_after(repo_dir):
    srv = _serve(ModelRepository(repo_dir, devices=1, queue=0))
    try:
        h, p = srv.address
        with nmc.connect(h, p, model="rec") as first:
            with pytest.raises(ServerBusyError, match=r"server busy: all 1 devices taken.*retry after") as e:
                nmc.connect(h, p, model="rec")
            assert e.value.retry_after >= 1.0
            with nmc.connect(h, p, model="ff"):  # another model has its own devices
                pass
            first.step({})
    finally:
        srv.stop()


def test_queued_session_gets_the_device_when_it_frees_up(repo_dir):
    srv = _serve(ModelRepository(repo_dir, devices=1, queue=1, queue_timeout=20))
    try:
        h, p = srv.address
        first = nmc.connect(h, p, model="rec")
        got = []
        t = threading.Thread(target=lambda: got.append(nmc.connect(h, p, model="rec")))
        t.start()
        t.join(1.0)
        assert t.is_alive() and not got  # waiting in the queue
        with pytest.raises(ServerBusyError):  # the queue (1) is full
            nmc.connect(h, p, model="rec")
        first.close()
        t.join(20)
        assert got and got[0].step({}) is not None
        got[0].close()
    finally:
        srv.stop()


def test_batched_server_sessions_equal_sessions_alone(repo_dir):
    srv = _serve(ModelRepository(repo_dir, devices=1, max_batch=4, max_wait=0.01))
    xs = [spikes((6,), T=30, seed=s, p=0.4) for s in range(4)]
    want = [_local(repo_dir / "rec/1", x, window=3) for x in xs]
    got, errs = {}, []

    def one(i):
        try:
            with nmc.connect(*srv.address, model="rec", window=3) as c:
                got[i] = c.run_dense({"input": xs[i]})["output"][:30]
        except BaseException as e:
            errs.append(e)

    try:
        ts = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert not errs, errs
        for i in range(4):
            np.testing.assert_array_equal(got[i], want[i])
        (pool,) = srv.repo.get("rec", 1).extra["pools"].values()
        dev = pool._devices[0]["dev"]
        assert dev.batched_windows > dev.steps  # several sessions per step
    finally:
        srv.stop()


def test_cli_serves_a_repository_and_refuses_bad_pool_options(repo_dir, tmp_path):
    r = CliRunner().invoke(main, ["serve", str(repo_dir), "--port", "0", "--devices", "0"])
    assert r.exit_code == 2 and "error: --devices must be an integer from 1 to 1024, got 0" in r.output, r.output
    r = CliRunner().invoke(main, ["serve", str(repo_dir), "--port", "0", "--batch-wait-ms", "-1"])
    assert r.exit_code == 2 and "--batch-wait-ms" in r.output, r.output
    with pytest.raises(OptionError, match="not a directory"):
        ModelRepository(tmp_path / "missing")


def test_nmc_serve_repo_process_rescans_on_sighup(repo_dir, tmp_path):
    import signal
    import time

    d = _fresh(repo_dir, tmp_path)
    shutil.rmtree(d / "rec")
    with ServeProcess(d, "--max-batch", "2") as srv:
        h, p = srv.address
        x = spikes((8,), T=10, seed=4, p=0.4)
        with nmc.connect(h, p, model="ff", model_version=1, window=2) as c:
            np.testing.assert_array_equal(c.run_dense({"input": x})["output"][:10], _local(repo_dir / "ff/1", x))
            with pytest.raises(DeviceError, match="no model 'rec'"):
                nmc.connect(h, p, model="rec")
            shutil.copytree(repo_dir / "rec" / "1", d / "rec" / "1")
            srv.p.send_signal(signal.SIGHUP)
            for _ in range(100):  # the rescan runs in the background: bounded wait for it
                try:
                    with nmc.connect(h, p, model="rec") as c2:
                        assert c2.model_version == 1
                    break
                except DeviceError:
                    time.sleep(0.1)
            else:
                pytest.fail("model not loaded within 10 s of SIGHUP")
            assert c.step({}) is not None  # the open session was not touched
