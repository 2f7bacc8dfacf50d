"""`wavedge service`: the unit, environment file and udev rule it writes, and the unit's own
command line run under a supervisor of the tests' that does what systemd's `Restart=on-failure`
does. Its serial port (a pseudo-terminal behind a stable path, as /dev/serial/by-id gives) is
killed and recreated underneath it, it is stopped by SIGTERM, and no accepted sample loses its
result. Torch-free, as on a board."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import BUNDLED_MODEL, assert_one_line_error, run_cli, user_env


def _install(tmp_path, *extra) -> subprocess.CompletedProcess:
    return run_cli("service", "install", "bm", BUNDLED_MODEL, "--root", tmp_path / "root",
                   "--no-activate", "--wavedge", f"{sys.executable} -m wavedge.cli", *extra)


def test_install_writes_a_unit_an_environment_file_and_a_udev_rule(tmp_path):
    proc = _install(tmp_path, "--source", "serial:///dev/ttyACM0?baud=115200", "--sink",
                    "jsonl:/var/lib/wavedge/bm.jsonl?append=1", "--backend", "litert",
                    "--user", "pi")
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "root"
    unit = (root / "etc/systemd/system/wavedge-bm.service").read_text()
    assert "After=network-online.target dev-ttyACM0.device" in unit
    assert "Restart=on-failure" in unit and "StartLimitIntervalSec=0" in unit
    assert "EnvironmentFile=/etc/wavedge/bm.env" in unit and "User=pi" in unit
    env = (root / "etc/wavedge/bm.env").read_text()
    assert "WAVEDGE_SOURCE=serial:///dev/ttyACM0?baud=115200" in env
    assert "WAVEDGE_OPTIONS=--backend litert" in env
    rule = (root / "etc/udev/rules.d/90-wavedge-bm.rules").read_text()
    assert 'KERNEL=="ttyACM0"' in rule and 'ENV{SYSTEMD_WANTS}+="wavedge-bm.service"' in rule
    removed = run_cli("service", "uninstall", "bm", "--root", root, "--no-activate")
    assert removed.returncode == 0 and not list((root / "etc").rglob("*bm*"))


def test_a_jetson_service_runs_on_its_providers_with_its_engines_kept_across_restarts(
        tmp_path, monkeypatch):
    """`service install` took none of the run's --provider, --trt-cache, --threads and
    --seed, so a Jetson's service could not be put on CUDA or TensorRT but by editing its
    file. They are the run's own options now, and for TensorRT the unit asks systemd for a
    cache folder (CacheDirectory=) where the engines, built for minutes at the first start,
    are kept: the default had been ~/.cache, which a service user may not have."""
    from wavedge.cli import build_parser
    from wavedge.runtime.backend_onnxruntime import trt_cache_dir

    proc = _install(tmp_path, "--source", "serial:///dev/ttyACM0", "--sink", "null:",
                    "--provider", "tensorrt", "--provider", "cuda", "--threads", "2",
                    "--seed", "7", "--status-every", "60")
    assert proc.returncode == 0, proc.stderr
    unit = (tmp_path / "root/etc/systemd/system/wavedge-bm.service").read_text()
    assert "CacheDirectory=wavedge-bm" in unit.splitlines()
    env = (tmp_path / "root/etc/wavedge/bm.env").read_text()
    options = re.search(r"^WAVEDGE_OPTIONS=(.*)$", env, re.M).group(1).split()
    args = build_parser().parse_args(["run", "m", *options])
    assert (args.provider, args.threads, args.seed, args.status_every) == \
        (["tensorrt", "cuda"], 2, 7, 60.0)
    # what the run does with CacheDirectory: systemd gives the folder as $CACHE_DIRECTORY
    monkeypatch.setenv("CACHE_DIRECTORY", "/var/cache/wavedge-bm")
    assert trt_cache_dir() == Path("/var/cache/wavedge-bm/trt")
    assert trt_cache_dir("/data/trt") == Path("/data/trt")
    monkeypatch.delenv("CACHE_DIRECTORY")
    monkeypatch.setenv("XDG_CACHE_HOME", "/tmp/xdg")
    assert trt_cache_dir() == Path("/tmp/xdg/wavedge/trt")
    given = _install(tmp_path, "--source", "serial:///dev/ttyACM0", "--sink", "null:",
                     "--provider", "tensorrt", "--trt-cache", "/data/trt")
    assert given.returncode == 0, given.stderr
    unit = (tmp_path / "root/etc/systemd/system/wavedge-bm.service").read_text()
    assert "CacheDirectory" not in unit  # the folder given is the one used
    assert "--trt-cache /data/trt" in (tmp_path / "root/etc/wavedge/bm.env").read_text()


def test_a_service_writes_to_several_sinks(tmp_path):
    """`service install ... --sink jsonl:FILE --sink link:/dev/ttyUSB0`: the log that keeps
    every result and the board that acts on them; the first sink in WAVEDGE_SINK, the others
    with the options, the file appending, the board's device waited for."""
    from wavedge.cli import build_parser

    proc = _install(tmp_path, "--source", "serial:///dev/ttyACM0", "--sink",
                    "jsonl:/var/lib/wavedge/bm.jsonl", "--sink", "link:/dev/ttyUSB0",
                    "--on-change")
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "root"
    env = (root / "etc/wavedge/bm.env").read_text()
    assert "WAVEDGE_SINK=jsonl:/var/lib/wavedge/bm.jsonl?append=1\n" in env
    options = re.search(r"^WAVEDGE_OPTIONS=(.*)$", env, re.M).group(1).split()
    args = build_parser().parse_args(["run", "m", "--sink", "jsonl:/x", *options])
    assert (args.sink, args.on_change) == (["jsonl:/x", "link:/dev/ttyUSB0"], True)
    unit = (root / "etc/systemd/system/wavedge-bm.service").read_text()
    assert "dev-ttyACM0.device dev-ttyUSB0.device" in unit
    assert "--sink jsonl:/var/lib/wavedge/bm.jsonl?append=1: appends" in proc.stderr
    assert_one_line_error(_install(tmp_path, "--source", "stdin:", "--sink", "jsonl:/a.jsonl",
                                   "--sink", "csv:/a.jsonl"), "the file /a.jsonl is already")


@pytest.mark.parametrize("sink, written", [
    ("jsonl:/var/lib/wavedge/bm.jsonl", "jsonl:/var/lib/wavedge/bm.jsonl?append=1"),
    ("csv:/var/lib/wavedge/bm.csv?append=0", "csv:/var/lib/wavedge/bm.csv?append=0"),
    ("csv:/var/lib/wavedge/bm.csv?", "csv:/var/lib/wavedge/bm.csv?append=1"),
    ("jsonl:-", "jsonl:-"),
    ("null:", "null:"),
])
def test_a_file_sink_appends_across_the_services_restarts_unless_told_not_to(tmp_path, sink,
                                                                              written):
    """A unit restarts its run after each failure, at each boot and after each edit: a file
    sink without append=1 had started its file anew each time, losing what it held. The
    install adds append=1, says so, and keeps an explicit append=0."""
    proc = _install(tmp_path, "--source", "serial:///dev/ttyACM0", "--sink", sink)
    assert proc.returncode == 0, proc.stderr
    env = (tmp_path / "root/etc/wavedge/bm.env").read_text()
    assert f"WAVEDGE_SINK={written}\n" in env
    assert ("keeps its results across the service's restarts" in proc.stderr) == (
        written != sink), proc.stderr


def test_a_reinstall_on_a_full_disk_keeps_the_files_it_found(tmp_path):
    """The unit and environment files were rewritten in place: a disk that filled mid-write
    left them cut short, and the service that ran from them failed at its next start."""
    import resource

    env = tmp_path / "root/etc/wavedge/bm.env"
    assert _install(tmp_path, "--source", "serial:///dev/ttyACM0", "--sink",
                    "null:").returncode == 0
    env.chmod(0o600)  # an admin made it private; a reinstall keeps it so
    assert _install(tmp_path, "--source", "serial:///dev/ttyACM0", "--sink",
                    "null:").returncode == 0
    assert env.stat().st_mode & 0o777 == 0o600
    etc = tmp_path / "root/etc"
    before = {p: p.read_bytes() for p in etc.rglob("*") if p.is_file()}

    def capped():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))

    proc = subprocess.run([sys.executable, "-m", "wavedge.cli", "service", "install", "bm",
                           str(BUNDLED_MODEL), "--root", str(tmp_path / "root"), "--no-activate",
                           "--wavedge", f"{sys.executable} -m wavedge.cli", "--source",
                           "serial:///dev/ttyUSB0", "--sink", "null:"], capture_output=True, text=True,
                          timeout=120, env=user_env(), preexec_fn=capped)
    assert_one_line_error(proc, "File too large")
    assert {p: p.read_bytes() for p in etc.rglob("*") if p.is_file()} == before


def test_a_service_of_several_sensors_waits_for_each_and_runs_them_as_one_group(tmp_path):
    rec = BUNDLED_MODEL / "recording.csv"
    proc = _install(tmp_path, "--source", "serial:///dev/ttyACM0", "--source",
                    "serial:///dev/serial/by-id/usb-imu2?baud=115200", "--sink", "null:",
                    "--backend", "litert")
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "root"
    unit = (root / "etc/systemd/system/wavedge-bm.service").read_text()
    assert ("After=network-online.target dev-ttyACM0.device "
            "dev-serial-by\\x2did-usb\\x2dimu2.device") in unit
    env = (root / "etc/wavedge/bm.env").read_text()
    assert ("WAVEDGE_OPTIONS=--source serial:///dev/serial/by-id/usb-imu2?baud=115200 "
            "--backend litert") in env
    rule = (root / "etc/udev/rules.d/90-wavedge-bm.rules").read_text()
    assert 'KERNEL=="ttyACM0"' in rule and 'SYMLINK=="serial/by-id/usb-imu2"' in rule
    # the unit's own command line, as systemd splits it, with two recordings for sensors
    out = tmp_path / "r.jsonl"
    proc = _install(tmp_path, "--source", f"replay:{rec}?rate=max&limit=120", "--source",
                    f"replay:{rec}?rate=max&limit=80", "--sink", f"jsonl:{out}",
                    "--group", "always", "--tick-wait", "5")
    assert proc.returncode == 0, proc.stderr
    argv, _ = _command_line(root, "bm")
    run = subprocess.run(argv, capture_output=True, text=True, env=user_env(), timeout=120)
    assert run.returncode == 0, run.stderr
    assert ("2 streams, one call of the batch-8 step graph per tick (--group always), a tick "
            "waiting up to 5 ms for every source") in run.stderr
    streams = [json.loads(line)["stream"] for line in out.read_text().splitlines()]
    assert streams.count(0) == 120 and streams.count(1) == 80


def test_bad_service_requests_are_one_line_errors(tmp_path):
    assert_one_line_error(_install(tmp_path), "give NAME MODEL_DIR --source URL --sink URL")
    assert_one_line_error(run_cli("service", "uninstall", "nope", "--root", tmp_path,
                                  "--no-activate"), "no wavedge service 'nope'")
    bad = run_cli("service", "install", "b m", BUNDLED_MODEL, "--source", "stdin:", "--sink",
                  "null:", "--root", tmp_path, "--no-activate")
    assert_one_line_error(bad, "service name 'b m'")
    # a value with a space reached the run as two words ('fp32 ' as "'fp32" and "'")
    assert_one_line_error(_install(tmp_path, "--source", "stdin:", "--sink", "null:",
                                   "--precision", "fp32 "), "service --precision 'fp32 ': a "
                          "value without spaces")
    assert_one_line_error(_install(tmp_path, "--source", "stdin:", "--sink", "null:",
                                   "--wavedge", "'/opt/x"), "--wavedge \"'/opt/x\": No closing")
    assert_one_line_error(_install(tmp_path, "--source", "stdin:", "--sink", "null:",
                                   "--wavedge", "/opt/$V/wavedge"), "no '$' in the program's")
    assert_one_line_error(_install(tmp_path, "--source", "stdin:", "--sink",
                                   "jsonl:/var/lib/it's$HOME.jsonl"), "holds both ' and one of")


def _files(root: Path) -> dict:
    """Every file and link under ``root``: its path, and a link's target."""
    return {str(p.relative_to(root)): os.readlink(p) if p.is_symlink() else "file"
            for p in root.rglob("*") if p.is_symlink() or p.is_file()}


def test_an_image_gets_the_unit_enabled_as_systemctl_root_enables_it(tmp_path):
    """--root without --no-activate ran this machine's systemctl on the image's unit (and
    failed, the files written); now the image gets the link `systemctl --root` makes, and
    uninstall takes it away with the files."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    args = ("service", "install", "bm", BUNDLED_MODEL, "--source", "stdin:", "--sink", "null:")
    proc = run_cli(*args, "--root", ours)
    assert proc.returncode == 0 and "enabled in the image" in proc.stdout, proc.stderr
    link = "etc/systemd/system/multi-user.target.wants/wavedge-bm.service"
    assert _files(ours)[link] == "/etc/systemd/system/wavedge-bm.service"
    systemctl = shutil.which("systemctl")
    if systemctl:  # the reference: systemd's own offline enable
        assert run_cli(*args, "--root", theirs, "--no-activate").returncode == 0
        subprocess.run([systemctl, f"--root={theirs}", "enable", "wavedge-bm.service"],
                       check=True, capture_output=True)
        assert _files(ours) == _files(theirs)
    proc = run_cli("service", "uninstall", "bm", "--root", ours)
    assert proc.returncode == 0 and _files(ours) == {}, proc.stderr


def test_a_reinstall_replaces_its_own_files_and_no_other(tmp_path):
    """A reinstall without the serial sensor kept the old udev rule, which went on starting
    the service whenever that device appeared; a file wavedge did not write was replaced."""
    root = tmp_path / "root"
    assert _install(tmp_path, "--source", "serial:///dev/ttyACM0", "--sink", "null:"
                    ).returncode == 0
    assert "etc/udev/rules.d/90-wavedge-bm.rules" in _files(root)
    again = _install(tmp_path, "--source", "stdin:", "--sink", "null:")
    assert again.returncode == 0 and again.stdout.startswith(
        "wavedge-bm.service: replaced, not activated; ")
    assert sorted(_files(root)) == ["etc/systemd/system/wavedge-bm.service",
                                    "etc/wavedge/bm.env"]
    mine = root / "etc/udev/rules.d/90-wavedge-bm.rules"
    mine.parent.mkdir(parents=True, exist_ok=True)
    mine.write_text('ACTION=="add", KERNEL=="ttyUSB9", RUN+="/usr/local/bin/mine"\n')
    assert_one_line_error(_install(tmp_path, "--source", "serial:///dev/ttyACM0", "--sink",
                                   "jsonl:/var/lib/x.jsonl"),
                          "90-wavedge-bm.rules: exists and wavedge did not write it")
    assert "stdin:" in (root / "etc/wavedge/bm.env").read_text()  # nothing replaced
    assert "mine" in mine.read_text()


# systemd's rule that matters to a reinstall, as `man systemctl` states it: `start` (and
# `enable --now`) leave a running unit as it is, `restart` stops and starts it (or starts it);
# a unit runs the environment file it read when it started. No systemd runs in the tests.
_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$LOG"
case "$1" in
  start|restart) [ "$1" = start ] && [ -f "$RUNNING" ] || cp "$ENV_FILE" "$RUNNING" ;;
  enable) [ "$2" = --now ] && { [ -f "$RUNNING" ] || cp "$ENV_FILE" "$RUNNING"; } ;;
esac
exit 0
"""


def test_a_reinstall_on_the_board_restarts_the_running_unit_on_its_new_files(
        tmp_path, monkeypatch):
    """`systemctl enable --now` left the running unit on its old sink until a reboot, while
    the reinstall said it had started it."""
    from wavedge import service

    etc, bin_ = tmp_path / "board", tmp_path / "bin"
    bin_.mkdir()
    for name, text in (("systemctl", _SYSTEMCTL), ("udevadm", "#!/bin/sh\nexit 0\n")):
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    where = {k: etc / p.relative_to("/") for k, p in service.paths("bm", Path("/")).items()}
    monkeypatch.setattr(service, "paths", lambda name, root: where)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    for k, v in (("LOG", "log"), ("RUNNING", "running.env")):
        monkeypatch.setenv(k, str(tmp_path / v))
    monkeypatch.setenv("ENV_FILE", str(where["env"]))
    for sink in ("null:", "jsonl:/var/lib/wavedge/bm.jsonl?append=1"):
        service.install(service.Service("bm", BUNDLED_MODEL, ("stdin:",), sink), Path("/"))
        assert f"WAVEDGE_SINK={sink}" in (tmp_path / "running.env").read_text()
    assert (tmp_path / "log").read_text().splitlines()[0] == "daemon-reload"


@pytest.mark.parametrize("extra, message", [
    (("--source", "serial:///dev/ttyACM0", "--sink", "file:/var/lib/bm.csv"),
     "unknown sink scheme 'file'"),
    (("--source", "seral:///dev/ttyACM0", "--sink", "null:"), "unknown source scheme 'seral'"),
    (("--source", "stdin:", "--sink", "null:", "--precision", "int4"),
     "no onnx step graph at precision 'int4'"),
    (("--source", "stdin:", "--sink", "null:", "--reset", "every:0"), "--reset: 'every:0'"),
    (("--source", "stdin:", "--sink", "null:", "--noise", "sample"), "has no noise input"),
    (("--source", "stdin:", "--sink", "null:", "--tick-wait", "5"),
     "--tick-wait: for a run of several sources"),
    (("--source", "serial:///dev/ttyACM0", "--source", "serial:///dev/ttyACM0", "--sink",
      "null:"), "/dev/ttyACM0 is already a source of this run"),
    (("--source", "serial:///dev/ttyACM0", "--source", "serial:///dev/ttyACM1", "--sink",
      "null:", "--tick-wait", "-1"), "--tick-wait: between 0 and 1000 ms"),
    (("--source", "replay:rec.csv?rate=max", "--sink", "null:"),
     "--source replay:rec.csv?rate=max: rec.csv is a relative path, and a service runs in /"),
    (("--source", "stdin:", "--sink", "jsonl:out/bm.jsonl?append=1"),
     "out/bm.jsonl is a relative path"),
    (("--source", "stdin:", "--sink", "mqtt://broker/fleet/bm?env=mqtt.env"),
     "mqtt.env is a relative path"),
    (("--source", "mqtts://broker/fleet/in?env=secrets/mqtt.env", "--sink", "null:"),
     "secrets/mqtt.env is a relative path"),
    (("--source", "stdin:", "--sink", "null:", "--provider", "tensorrt", "--trt-cache", "trt"),
     "--trt-cache: trt is a relative path"),
    (("--source", "stdin:", "--sink", "null:", "--backend", "litert", "--provider", "cuda"),
     "backend litert has no provider cuda"),
    (("--source", "replay:/data/log.csv", "--sink", "csv:/data/log.csv?append=1"),
     "--sink csv:/data/log.csv?append=1: /data/log.csv is read by --source replay:"),
    (("--source", "stdin:", "--sink", "jsonl:/data/bm.jsonl", "--summary", "/data/bm.jsonl"),
     "--summary /data/bm.jsonl: /data/bm.jsonl is written by --sink jsonl:/data/bm.jsonl"),
])
def test_a_unit_whose_run_would_fail_at_every_restart_is_refused_before_anything_is_written(
        tmp_path, extra, message):
    """The unit restarts its run every 2 s for ever: what the run refuses at start is refused
    at install, with the run's own words, and nothing is written (nor printed)."""
    for flag in ("--no-activate", "--print"):
        assert_one_line_error(_install(tmp_path, *extra, flag), message)
    assert not (tmp_path / "root").exists()


def test_a_model_directory_in_an_image_is_named_by_its_path_on_the_board(tmp_path):
    """--root: the model directory copied into the image is read there, and the unit names it
    by the image's path, not this machine's; a directory that is not a model one is refused."""
    import shutil

    root = tmp_path / "root"
    shutil.copytree(BUNDLED_MODEL, root / "opt/models/bm")
    proc = run_cli("service", "install", "bm", root / "opt/models/bm", "--source", "stdin:",
                   "--sink", "null:", "--root", root, "--no-activate")
    assert proc.returncode == 0, proc.stderr
    unit = (root / "etc/systemd/system/wavedge-bm.service").read_text()
    assert " run /opt/models/bm --source" in unit
    assert_one_line_error(run_cli("service", "install", "bm", tmp_path, "--source", "stdin:",
                                  "--sink", "null:", "--root", root, "--no-activate"),
                          "manifest.json: missing")


def _command_line(root: Path, name: str) -> tuple[list[str], float]:
    """The unit's ExecStart as systemd would run it: the environment file read, ``${VAR}``
    one argument, ``$VAR`` split on whitespace; and its RestartSec."""
    unit = (root / f"etc/systemd/system/wavedge-{name}.service").read_text()
    env_file = re.search(r"^EnvironmentFile=(.+)$", unit, re.M).group(1)
    env = {k: " ".join(shlex.split(v)) for k, v in (  # quotes read as systemd reads them
        line.split("=", 1) for line in (root / env_file.lstrip("/")).read_text().splitlines()
        if line and not line.startswith("#"))}
    line = re.search(r"^ExecStart=(.+)$", unit, re.M).group(1)
    assert not re.search(r"%[^%]", line.replace("%%", "")), line  # no specifier but %%
    argv = []
    for word in shlex.split(line.replace("%%", "%")):  # specifiers first, then the words
        if word.startswith("${"):
            argv.append(env[word[2:-1]])
        elif word.startswith("$") and not word.startswith("$$"):
            argv += env[word[1:]].split()
        else:
            argv.append(word.replace("$$", "$"))
    return argv, float(re.search(r"^RestartSec=(\d+)", unit, re.M).group(1))


def test_a_unit_runs_its_model_and_command_from_any_path(tmp_path):
    """The model directory's path was single-quoted into ExecStart=, where systemd still
    expands '%d' (a specifier) and '$X' (a variable), --wavedge's path went in unquoted, and
    the environment file's values went in raw, where systemd reads quotes as a shell does: a
    folder with a space, a '%', a '$' or a "'" in its name gave a unit that failed at every
    start, or wrote elsewhere. Read back by systemd's rules (and `systemd-analyze verify` where it is installed),
    the command is the one given, and it runs."""
    odd = tmp_path / 'my models %d $HOME "q"'
    shutil.copytree(BUNDLED_MODEL, odd / "bm")
    (tmp_path / "bin dir %d").mkdir()
    script = tmp_path / "bin dir %d" / "wavedge"  # as a venv's script would be, elsewhere
    script.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m wavedge.cli \"$@\"\n")
    script.chmod(0o755)
    out = tmp_path / "bob's data" / "results.jsonl"  # the quote had been read as opening one
    proc = run_cli("service", "install", "bm", odd / "bm", "--root", tmp_path / "root",
                   "--no-activate", "--wavedge", shlex.quote(str(script)),
                   "--source", "replay:?rate=max&limit=5", "--sink", f"jsonl:{out}",
                   "--reset", "recording, every:50")
    assert proc.returncode == 0, proc.stderr
    argv, _ = _command_line(tmp_path / "root", "bm")
    assert argv == [str(script), "run", str(odd / "bm"), "--source",
                    "replay:?rate=max&limit=5", "--sink", f"jsonl:{out}?append=1", "--reset",
                    "recording,every:50"]  # its own spelling, one word: no space to split
    ran = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=user_env())
    assert ran.returncode == 0, ran.stderr
    assert len(out.read_text().splitlines()) == 5
    if shutil.which("systemd-analyze"):  # checks the program's path as systemd reads it
        unit = tmp_path / "root/etc/systemd/system/wavedge-bm.service"
        verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                                text=True, timeout=60)
        assert verify.returncode == 0, verify.stderr


class Supervisor:
    """systemd's part: run the command, restart it ``restart_s`` after a non-zero exit, stop
    restarting once it exits 0 (a SIGTERM is a stop, not a failure)."""

    def __init__(self, argv: list[str], restart_s: float) -> None:
        self.argv, self.restart_s = argv, restart_s
        self.runs: list[tuple[int, str]] = []  # exit code, stderr
        self.started = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            self.started.clear()
            self.proc = subprocess.Popen(self.argv, stderr=subprocess.PIPE, text=True,
                                         env=user_env())
            lines = []
            for line in self.proc.stderr:
                lines.append(line)
                if "; source " in line:  # the run's start line: the port is open
                    self.started.set()
            code = self.proc.wait()
            self.started.clear()
            self.runs.append((code, "".join(lines)))
            if code == 0:
                return
            time.sleep(self.restart_s)


def _pty_behind(link: Path) -> tuple[int, int]:
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no line discipline: bytes pass as they are
    tmp = link.with_suffix(".new")
    os.symlink(os.ttyname(slave), tmp)
    os.replace(tmp, link)
    return master, slave


def _send(master: int, rows) -> None:
    for row in rows:
        os.write(master, (",".join(f"{v:.4f}" for v in row) + "\n").encode())
        time.sleep(0.002)


def _results(path: Path, want: int, timeout_s: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= want:
            return [json.loads(ln) for ln in lines]
        time.sleep(0.1)
    raise AssertionError(f"{len(lines)} results of {want} after {timeout_s} s")


@pytest.mark.timeout(120)
def test_the_units_command_survives_its_port_dying_and_stops_on_sigterm_losing_nothing(tmp_path):
    import numpy as np

    port, out = tmp_path / "ttyWAVE", tmp_path / "results.jsonl"
    proc = _install(tmp_path, "--source", f"serial://{port}?reconnect_s=0.5", "--sink",
                    f"jsonl:{out}?append=1")
    assert proc.returncode == 0, proc.stderr
    argv, restart_s = _command_line(tmp_path / "root", "bm")
    rows = np.random.default_rng(0).normal(0, 1, (160, 6))
    master, slave = _pty_behind(port)
    sup = Supervisor(argv, restart_s)
    assert sup.started.wait(30), sup.runs
    _send(master, rows[:80])
    time.sleep(1.0)  # read by the run (its sink writes them at the latest when it stops)
    os.close(master)  # the port dies for longer than the source waits: the run fails
    os.close(slave)
    port.unlink()
    deadline = time.monotonic() + 30
    while not sup.runs and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sup.runs and sup.runs[0][0] == 1, sup.runs  # ... with its error and exit 1
    assert len(_results(out, 80, 1.0)) == 80  # written before it exited
    master, slave = _pty_behind(port)  # the port comes back; the supervisor restarts the run
    assert sup.started.wait(30), sup.runs
    _send(master, rows[80:])
    time.sleep(1.0)
    sup.proc.send_signal(signal.SIGTERM)
    sup.thread.join(20)
    got = _results(out, 160, 1.0)
    os.close(master)
    os.close(slave)
    codes = [code for code, _ in sup.runs]
    assert codes[0] == 1 and codes[-1] == 0, sup.runs  # restarted, then stopped cleanly
    accepted = sum(int(re.search(r"samples: (\d+)", err).group(1)) for _, err in sup.runs
                   if "samples: " in err)
    assert accepted == len(got) == 160  # every accepted sample's result, across the restart
    assert "(stopped by SIGTERM)" in sup.runs[-1][1]
