"""Pages whose code must run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, needs_torch


@needs_torch
def test_own_model_page_runs_as_written(tmp_path):
    text = (ROOT / "docs" / "own-model.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, re.S)
    script = tmp_path / "own_model.py"
    script.write_text(block)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    label_line, configs = proc.stdout.strip().splitlines()[-2:]
    assert label_line.split()[0] in ("still", "shaken")
    assert "onnxruntime/fp32/step" in configs and "onnxruntime/int8/step" in configs


@needs_torch
@pytest.mark.timeout(900)  # trains a model: about a minute here
def test_own_data_page_runs_as_written(tmp_path):
    """The walkthrough: unequal recordings at 50 Hz, trained, exported fp32 and int8,
    inspected and replayed from the CLI only; the replayed accuracy within 2 points of the
    manifest's."""
    import csv
    import json
    import os

    text = (ROOT / "docs" / "own-data.md").read_text()
    (make,) = re.findall(r"```python\n(.*?)```", text, re.S)
    (commands,) = re.findall(r"```bash\n(.*?)```", text, re.S)
    (tmp_path / "make.py").write_text(make)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([sys.executable, "make.py"], cwd=tmp_path, check=True, timeout=60)
    lengths = {}
    with open(tmp_path / "accel.csv") as fh:
        for row in csv.DictReader(fh):
            lengths[row["session"]] = lengths.get(row["session"], 0) + 1
    assert len(set(lengths.values())) > 10  # recordings of unequal length
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    raw = json.loads((tmp_path / "accel_model" / "manifest.json").read_text())
    assert raw["signature"]["sample_rate_hz"] == 50.0 and raw["reset"]["policy"] == "never"
    assert "50 Hz" in proc.stdout and "resets: never" in proc.stdout  # inspect
    (entry,) = [f for f in raw["files"] if f["path"] == "model.step.int8.onnx"]
    manifest_acc = entry["accuracy"]["test"]
    line = [ln for ln in proc.stderr.splitlines() if "at the last sample" in ln][-1]
    replayed = float(line.rsplit("(", 1)[1].rstrip("%)")) / 100
    assert abs(replayed - manifest_acc) <= 0.02, (line, manifest_acc)
    assert manifest_acc >= 0.75  # chance is 0.25
    with open(tmp_path / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == raw["recording"]["samples"]


def test_every_link_and_make_target_the_docs_name_exists():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), re.M))
    broken = []
    for page in pages:
        text = page.read_text()
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" not in link and not (page.parent / link).exists():
                broken.append(f"{page.name}: link {link}")
        for target in re.findall(r"`make ([a-z][a-z0-9-]*)", text):
            if target not in targets:
                broken.append(f"{page.name}: make {target}")
    assert not broken, broken


def test_the_mqtt_pages_credentials_file_reads_as_written(tmp_path):
    """Its example had comments after the values, which were read as part of them (a CA path
    ending in "# mqtts: the broker's CA"), as systemd's EnvironmentFile= reads them too."""
    from functools import partial

    from wavedge.runtime.mqtt import ENV_KEYS
    from wavedge.runtime.urls import env_secrets

    _secrets = partial(env_secrets, keys=ENV_KEYS)  # the MQTT URLs' reading of ?env=

    text = (ROOT / "docs" / "mqtt.md").read_text()
    (block,) = re.findall(r"```sh\n(# /etc/wavedge/mqtt.env.*?)```", text, re.S)
    (tmp_path / "mqtt.env").write_text(block)
    got = _secrets(str(tmp_path / "mqtt.env"), "mqtt://broker/t")
    assert got["WAVEDGE_MQTT_CA_CERTS"] == "/etc/wavedge/broker-ca.pem"
    assert got["WAVEDGE_MQTT_CERTFILE"] == "/etc/wavedge/pi-7.crt"
    assert got["WAVEDGE_MQTT_USERNAME"] == "pi-7" and len(got) == 5
    # quoted as in a systemd environment file; a quote that is part of a value stays
    (tmp_path / "q.env").write_text("WAVEDGE_MQTT_PASSWORD='a b#c'\nWAVEDGE_MQTT_USERNAME=x\"\n")
    assert _secrets(str(tmp_path / "q.env"), "t") == {"WAVEDGE_MQTT_PASSWORD": "a b#c",
                                                        "WAVEDGE_MQTT_USERNAME": 'x"'}


def test_the_quickstart_gives_what_its_later_commands_read():
    """The quickstart's `wavedge probe runs/bm-model` ended in "has no recording of its own":
    a command that reads a model directory's own recording (`probe DIR` without DATA, `run
    DIR` without --source) needs that directory exported with --recording (or bundled)."""
    text = (ROOT / "README.md").read_text()
    section = text.partition("## Quickstart")[2].partition("\n## ")[0]
    commands = [line.partition("#")[0].split() for block in re.findall(r"```sh\n(.*?)```",
                                                                          section, re.S)
                for line in block.splitlines()]
    recorded = {c[c.index("--out") + 1] for c in commands
                if c[:2] == ["wavedge", "export"] and "--recording" in c}
    readers = [c[2] for c in commands if c[:2] == ["wavedge", "probe"]
               and all(a.startswith("--") for a in c[3::2])]  # options and values: no DATA
    readers += [c[2] for c in commands if c[:2] == ["wavedge", "run"] and "--source" not in c]
    assert readers and all(r in recorded or r.startswith("wavedge/bundled/") for r in readers), \
        (readers, recorded)
