"""``wavedge service``: a ``wavedge run`` pipeline as a systemd service on a board.

Three files, each small enough to read before installing:

- the unit ``wavedge-NAME.service``: ``wavedge run`` on the model directory with the source (or
  sources: a board with several sensors runs them as one group), sink and options of the
  environment file, restarted 2 s after any failure, for ever (no start
  limit: a board with its sensor unplugged keeps trying), stopped by SIGTERM (the run flushes its
  sink and exits 0: a stop is not a failure), its output in the journal under ``wavedge-NAME``;
- the environment file ``/etc/wavedge/NAME.env``: ``WAVEDGE_SOURCE``, ``WAVEDGE_SINK`` and the
  options (further sources as ``--source URL`` there), one per line, to change the pipeline without touching the unit (MQTT credentials stay
  in their own env file, ``mqtt.md``);
- for each serial device (a ``serial://`` source or a ``link:`` sink on a device path), a udev
  rule that tags the device for systemd and starts the service when it appears, and the unit
  waits for the devices (``After=`` their device units) at boot.

No watchdog: ``wavedge run`` blocks on its source while a sensor is quiet, and a ping from a
thread of its own would prove only that the thread runs; ``Restart=on-failure`` covers a run
that dies. ``install`` writes the files under ``--root`` (default ``/``) and, unless told not
to, reloads systemd and udev and enables and starts the unit; under another root (an image
being built) it enables the unit as ``systemctl --root`` does, by its link in
``multi-user.target.wants``. ``uninstall`` undoes it.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from wavedge.errors import InputError
from wavedge.stopping import write_whole

UNIT_DIR = Path("etc/systemd/system")
ENV_DIR = Path("etc/wavedge")
UDEV_DIR = Path("etc/udev/rules.d")
WANTS_DIR = UNIT_DIR / "multi-user.target.wants"  # a unit enabled: its link here
RESTART_S = 2
STOP_S = 10  # SIGTERM, then this long before SIGKILL: the run flushes within 2 s


@dataclass(frozen=True)
class Service:
    name: str
    model_dir: Path
    sources: tuple[str, ...]  # source k feeds stream k (one source: one stream)
    sinks: tuple[str, ...]  # each gets every result
    # run option -> value (backend, precision...), or a list of values for a repeated one
    options: dict = field(default_factory=dict)
    user: str | None = None
    wavedge: str = ""  # the wavedge executable (default: the one running this)

    def __post_init__(self) -> None:
        if not self.name.replace("-", "").replace("_", "").isalnum():
            raise InputError(f"service name {self.name!r}: letters, digits, '-' and '_' only")
        for kind in ("sources", "sinks"):
            urls = getattr(self, kind)
            if isinstance(urls, str):
                object.__setattr__(self, kind, urls := (urls,))
            # the first sink is one argument of its own (${WAVEDGE_SINK}); the others go
            # with the options, which systemd splits on whitespace
            bad = [u for k, u in enumerate(urls)
                   if not u or (any(c.isspace() for c in u) and (kind, k) != ("sinks", 0))]
            if bad or not urls:
                raise InputError(f"service {kind[:-1]} {bad[0] if bad else ''!r}: a URL "
                                 "without spaces (systemd splits the unit's options on them)")
        # systemd splits $WAVEDGE_OPTIONS on whitespace and takes quotes literally: a value
        # with a space ('recording, gap:2') reached the run as two words at every start
        words = self.option_words()
        for flag, v in zip(words[::2], words[1::2]):
            if any(c.isspace() for c in v):
                raise InputError(f"service {flag} {v!r}: a value without spaces (systemd "
                                 "splits the unit's options on them)")

    @property
    def unit_name(self) -> str:
        return f"wavedge-{self.name}.service"

    @property
    def devices(self) -> list[str]:
        """The serial device paths the pipeline needs, in order."""
        out = []
        urls = [(u, "serial://") for u in self.sources] + [(u, "link:") for u in self.sinks]
        for url, scheme in urls:
            if url.startswith(scheme):
                path = url[len(scheme):].split("?", 1)[0]
                if path.startswith("/dev/") and path not in out:
                    out.append(path)
        return out

    def run_argv(self) -> list[str]:
        """The unit's ``wavedge run`` arguments, as its environment file gives them."""
        return ["run", str(self.model_dir), *(a for u in self.sources for a in ("--source", u)),
                *(a for u in self.sinks for a in ("--sink", u)), *self.option_words()]

    def option_words(self) -> list[str]:
        """The options as command-line words: ``--k v``, once per value of a list; a flag
        (``--on-change``) as its name alone."""
        return [w for k, v in self.options.items()
                for one in (v if isinstance(v, (list, tuple)) else [v])
                for w in ((f"--{k}",) if one is True else (f"--{k}", str(one)))]

    def executable(self) -> list[str]:
        """The command's words: ``--wavedge`` split as a shell splits it, else the install
        that wrote the unit, by its own ``wavedge`` script (not the first on a PATH that sudo
        may have changed) or its interpreter."""
        if self.wavedge:
            try:
                words = shlex.split(self.wavedge)
            except ValueError as exc:  # "No closing quotation"
                raise InputError(f"--wavedge {self.wavedge!r}: {exc}") from None
            if not words:
                raise InputError("--wavedge: give the command the unit runs")
            return words
        script = Path(sys.executable).parent / "wavedge"
        return [str(script)] if script.is_file() else [sys.executable, "-m", "wavedge.cli"]


_PLAIN = re.compile(r"[\w@+=:,./-]+")  # what an ExecStart= word may hold unquoted


def _exec_words(svc: Service) -> str:
    """The unit's command line up to the run's sources (given by its environment file)."""
    program, *rest = svc.executable()
    what = "--wavedge" if svc.wavedge else "this wavedge's path"
    return " ".join([_exec_word(program, what, program=True),
                     *(_exec_word(w, what) for w in rest), "run",
                     _exec_word(str(svc.model_dir), "the model directory")])


def _exec_word(word: str, what: str, program: bool = False) -> str:
    """``word`` as one word of an ExecStart= line that systemd reads back as ``word``:
    double-quoted, with C escapes, when it holds more than plain characters; ``%`` doubled,
    as systemd expands specifiers inside quotes too; ``$`` doubled (a variable otherwise),
    but refused in the ``program``'s path, which systemd does not unescape."""
    if "\n" in word or "\r" in word:
        raise InputError(f"{what} {word!r}: a systemd unit cannot hold a line break")
    if program and "$" in word:
        raise InputError(f"{what} {word!r}: systemd takes no '$' in the program's path")
    if not _PLAIN.fullmatch(word):
        word = '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word.replace("%", "%%").replace("$", "$$")


def _device_unit(path: str) -> str:
    """systemd's name for the device unit of ``path`` (as ``systemd-escape --path
    --suffix=device`` writes it)."""
    trimmed = path.strip("/")
    out = []
    for i, ch in enumerate(trimmed):
        if ch == "/":
            out.append("-")
        elif ch.isalnum() or ch in ":_" or (ch == "." and i > 0):
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}")
    return "".join(out) + ".device"


def env_text(svc: Service) -> str:
    # systemd splits $WAVEDGE_OPTIONS on whitespace and does not unquote: the further sources
    # and the options go there as plain words (Service refuses a space in any)
    flags = " ".join([*(f"--source {u}" for u in svc.sources[1:]),
                      *(f"--sink {u}" for u in svc.sinks[1:]), *svc.option_words()])
    values = {"WAVEDGE_SOURCE": svc.sources[0], "WAVEDGE_SINK": svc.sinks[0],
              "WAVEDGE_OPTIONS": flags}
    head = f"# wavedge service {svc.name}: edit, then `systemctl restart {svc.unit_name}`"
    return "\n".join([head, *(f"{k}={_env_value(v)}" for k, v in values.items())]) + "\n"


def _env_value(value: str) -> str:
    """``value`` as an environment file gives it to systemd, whose parser reads quotes and
    backslashes anywhere in a value, as a shell does (``csv:/data/bob's.csv`` had lost its
    quote, and the rest of the line had been read as quoted): as it is when plain, else in
    single quotes (nothing inside is special), else in double quotes when only ``'`` needs
    them (systemd's escapes inside double quotes differ between its versions)."""
    if not re.search(r"[\\'\"$`]|^[\s#;]|\s$", value):
        return value
    if "'" not in value:
        return f"'{value}'"
    if not re.search(r'[\\"$`]', value):
        return f'"{value}"'
    raise InputError(f"service: {value!r} holds both ' and one of \\ \" $ `, which an "
                     "environment file cannot give systemd alike in all its versions")


def unit_text(svc: Service, env_path: Path) -> str:
    after = ["network-online.target"] + [_device_unit(d) for d in svc.devices]
    lines = [
        "[Unit]",
        f"Description=wavedge {svc.name}: {svc.model_dir.name.replace('%', '%%')} from its "
        "source to its sink",
        f"After={' '.join(after)}",
        "Wants=network-online.target",
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=simple",
        f"EnvironmentFile={env_path}",
        # ${VAR} is one argument, $VAR splits on whitespace (the options)
        f"ExecStart={_exec_words(svc)} "
        "--source ${WAVEDGE_SOURCE} --sink ${WAVEDGE_SINK} $WAVEDGE_OPTIONS",
        "Restart=on-failure",
        f"RestartSec={RESTART_S}",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={STOP_S}",
        f"SyslogIdentifier=wavedge-{svc.name}",
        # TensorRT's engines, built for minutes at a first start, kept across restarts in
        # /var/cache/wavedge-NAME (the run reads $CACHE_DIRECTORY): a service user may have
        # no home to keep them in
        *([f"CacheDirectory=wavedge-{svc.name}"]
          if "tensorrt" in svc.options.get("provider", ()) and "trt-cache" not in svc.options
          else []),
        *([f"User={svc.user}", "SupplementaryGroups=dialout"] if svc.user else []),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def udev_text(svc: Service) -> str | None:
    if not svc.devices:
        return None
    lines = []
    for device in svc.devices:
        rel = device[len("/dev/"):]
        match = f'KERNEL=="{rel}"' if "/" not in rel else f'SYMLINK=="{rel}"'
        lines += [f"# wavedge service {svc.name}: start it when {device} appears",
                  f'ACTION=="add", SUBSYSTEM=="tty", {match}, TAG+="systemd", '
                  f'ENV{{SYSTEMD_WANTS}}+="{svc.unit_name}"']
    return "\n".join(lines) + "\n"


def target_path(here: Path, root: Path) -> Path:
    """The unit's name for ``here``, a path on this machine: under ``root`` (an image being
    built) the image's own path, else the same path."""
    here = here.resolve()
    return Path("/") / here.relative_to(root) if here.is_relative_to(root) else here


def where_here(target: Path, root: Path) -> Path:
    """Where this machine reads the target's ``target``: inside ``root`` when it is there."""
    inside = root / target.relative_to("/") if target.is_absolute() else target
    return inside if inside.exists() else target


def paths(name: str, root: Path) -> dict[str, Path]:
    return {"unit": root / UNIT_DIR / f"wavedge-{name}.service",
            "env": root / ENV_DIR / f"{name}.env",
            "udev": root / UDEV_DIR / f"90-wavedge-{name}.rules"}


def _ours(path: Path, name: str) -> bool:
    """Whether ``path`` is a file an install of service ``name`` wrote: the environment file
    and the udev rule start with its mark, the unit logs under its name."""
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8", errors="replace")
    return text.startswith(f"# wavedge service {name}:") or \
        f"\nSyslogIdentifier=wavedge-{name}\n" in text


def install(svc: Service, root: Path = Path("/"), activate: bool = True) -> list[Path]:
    """Write the files, replacing those of an earlier install of this service (a udev rule it
    no longer needs is removed: it would start the service when the old device appears) and
    refusing to replace a file wavedge did not write; with ``activate``, reload systemd and
    udev, enable the unit and (re)start it. Returns the paths written."""
    where = paths(svc.name, root)
    if not (where_here(svc.model_dir, root) / "manifest.json").is_file():
        raise InputError(f"{svc.model_dir}: not a model directory (no manifest.json)")
    foreign = [p for p in where.values() if p.exists() and not _ours(p, svc.name)]
    if foreign:
        raise InputError(f"{foreign[0]}: exists and wavedge did not write it; move it away or "
                         "give the service another name")
    texts = {"env": env_text(svc), "unit": unit_text(svc, Path("/") / ENV_DIR / f"{svc.name}.env"),
             "udev": udev_text(svc)}
    rules_before = where["udev"].exists()
    written = []
    for key, text in texts.items():
        if text is None:
            where[key].unlink(missing_ok=True)
            continue
        where[key].parent.mkdir(parents=True, exist_ok=True)
        written.append(write_whole(where[key], text))
    if activate and root != Path("/"):  # an image: no systemd running to ask
        written.append(_enable_in_image(svc.unit_name, root))
    elif activate:
        _run(["systemctl", "daemon-reload"])
        if texts["udev"] or rules_before:
            _run(["udevadm", "control", "--reload"])
        _run(["systemctl", "enable", svc.unit_name])
        # restart, not `enable --now`: that leaves a unit already running on the command
        # line and environment it started with, so a reinstall changed nothing until a reboot
        # (restart starts a unit that is not running)
        _run(["systemctl", "restart", svc.unit_name])
    return written


def _enable_in_image(unit_name: str, root: Path) -> Path:
    """The link ``systemctl --root=ROOT enable`` makes (an absolute target, as on the board)."""
    link = root / WANTS_DIR / unit_name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(Path("/") / UNIT_DIR / unit_name)
    return link


def uninstall(name: str, root: Path = Path("/"), activate: bool = True) -> list[Path]:
    where = paths(name, root)
    if not where["unit"].is_file():
        raise InputError(f"no wavedge service {name!r} ({where['unit']} does not exist)")
    unit_name = where["unit"].name
    live = activate and root == Path("/")  # else an image: its files are all there is
    if live:
        _run(["systemctl", "disable", "--now", unit_name])
    link = root / WANTS_DIR / unit_name
    removed = [p for p in where.values() if p.is_file()] + ([link] if link.is_symlink() else [])
    for p in removed:
        p.unlink()
    if live:
        _run(["systemctl", "daemon-reload"])
    return removed


def _run(cmd: list[str]) -> None:
    if shutil.which(cmd[0]) is None:
        raise InputError(f"{cmd[0]} not found: is this a systemd board? (--no-activate writes "
                         "the files only)")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise InputError(f"{' '.join(cmd)}: exit {proc.returncode}: {why}")
