"""deploy/Dockerfile and deploy/k8s.yaml, tested as far as files can be here (no
docker, no cluster): the manifest parses and agrees with the image, and the
image's entry point runs as a process (paths and ports mapped to this machine)."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
import yaml

import nmc
from nets import ff_lif
from nmc.runtime.serve.tenants import load_tenants

pytestmark = pytest.mark.timeout(120)
DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _instruction(name: str) -> list[str]:
    """The JSON (exec) form of a Dockerfile instruction."""
    m = re.search(rf"^{name}\s+(\[.*\])\s*$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert m, f"no {name} in exec form"
    return json.loads(m.group(1))


def test_k8s_manifest_parses_and_matches_the_image():
    docs = list(yaml.safe_load_all((DEPLOY / "k8s.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Secret", "Deployment", "Service"}
    spec = kinds["Deployment"]["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["args"] == _instruction("CMD")  # the same pool settings as the image's default
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    entry = _instruction("ENTRYPOINT")
    assert str(ports["sessions"]) == entry[entry.index("--port") + 1]
    assert str(ports["metrics"]) == entry[entry.index("--http-port") + 1]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert spec["terminationGracePeriodSeconds"] > float(entry[entry.index("--drain-timeout") + 1])
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["models"] == entry[2] and entry[entry.index("--token-file") + 1].startswith(mounts["tokens"])
    assert kinds["Service"]["spec"]["sessionAffinity"] == "ClientIP"


def test_image_entry_point_runs_as_a_process(tmp_path):
    repo = tmp_path / "models"
    nmc.compile(ff_lif(), target="spinnaker2", dt=1e-3, integrator="euler", reset="zero", output=repo / "ff" / "1")
    secret = next(d for d in yaml.safe_load_all((DEPLOY / "k8s.yaml").read_text()) if d["kind"] == "Secret")
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(secret["stringData"]["tokens.toml"])
    token = load_tenants(tokens)["example"].token
    mapping = {"/models": str(repo), "/etc/nmc/tokens.toml": str(tokens), "0.0.0.0": "127.0.0.1",
               "7878": "0", "9090": "0"}
    argv = _instruction("ENTRYPOINT") + _instruction("CMD")
    assert argv[0] == "nmc"
    cmd = [sys.executable, "-m", "nmc.cli"] + [mapping.get(a, a) for a in argv[1:]]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        t = threading.Thread(target=lambda: lines.append(p.stdout.readline()), daemon=True)
        t.start()
        t.join(60)
        m = re.search(r"on 127\.0\.0\.1:(\d+); metrics, /healthz, /readyz on http://127\.0\.0\.1:(\d+)", lines[0])
        assert m, lines
        port, http = int(m.group(1)), int(m.group(2))
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=10) as r:
            assert r.status == 200
        with nmc.connect("127.0.0.1", port, token=token, model="ff") as c:
            assert c.step({}) is not None
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        logs = [json.loads(ln) for ln in p.stderr.read().splitlines() if ln.strip()]
        assert any("loaded ff version 1" in r["msg"] for r in logs)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
