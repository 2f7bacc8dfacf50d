"""The ``wavedge`` command. Each subcommand imports only what it needs: ``inspect`` and ``run``
never import torch."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from wavedge import stopping
from wavedge.errors import (InputError, ManifestError, WavedgeError, as_names, check_count,
                            parse_json, reason)


def _torch(command: str):
    """torch, which training and export run; a board's install has none (no traceback)."""
    try:
        import torch
    except ImportError:
        raise InputError(f"{command} needs torch, which is not installed here (a board's "
                         "install); on a workstation: pip install 'wavedge[export]'") from None
    return torch


def _cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    torch = _torch("train")

    from wavedge.models.train import default_recipe, torch_device, train
    from wavedge.runtime.backends import check_threads

    check_threads(args.threads, "--threads")
    torch_device(args.device)  # before the data is read
    if args.seed is not None:  # it splits the data before the recipe checks it
        check_count(args.seed, "--seed", 0)
    torch.set_num_threads(args.threads)
    task, dataset = args.task or "basic_motions", None
    if args.data is not None:
        from wavedge.models.train import user_data

        if args.task is not None:
            raise InputError("train: give --task (a bundled dataset) or --data FILE, not both")
        task, dataset = user_data(args.data, args.arch, args.validation, args.seed or 0)
    recipe = default_recipe(task, args.arch)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed),
                                   ("window", args.window),
                                   ("quant_aware_epochs", args.quant_aware_epochs),
                                   ("learning", args.learning))
                 if v is not None}
    if args.reset is not None:
        overrides["stream_segments"] = 1 if args.reset == "recording" else \
            max(2, recipe.stream_segments)
    if args.config is not None:
        overrides["model"] = {**recipe.model, **_json_object(args.config, "--config")}
    recipe = replace(recipe, **overrides)
    _, meta = train(recipe, out=args.out, progress=not args.quiet, dataset=dataset,
                    device=args.device)
    m = meta["metrics"]
    print(f"{meta['task']}/{args.arch}: {meta['summary']}, {m['n_parameters']} parameters, "
          f"{m['train_seconds']} s on {meta['device']}, reset policy "
          f"{meta['reset']['policy']} -> {args.out}")
    return 0


def _json_object(text: str, flag: str) -> dict:
    try:
        value = parse_json(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{flag}: not JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise InputError(f"{flag}: expected a JSON object, e.g. '{{\"channels\": 8}}'")
    return value


def _cmd_export(args: argparse.Namespace) -> int:
    _torch("export")
    from wavedge.export import ExportOptions, export_model_dir
    from wavedge.export.model_dir import checked_signature
    from wavedge.export.quantize import QuantOptions

    ckpt = _load_exportable(args)
    task = None
    if args.data is not None:
        from wavedge.models.tasks import data_task

        task = data_task(args.data, checked_signature(ckpt.model), ckpt.meta.get("task"))
    options = ExportOptions(chunk_samples=args.chunk, tolerance=args.tolerance,
                            check_steps=args.check_steps, recording=args.recording,
                            formats=tuple(f.strip() for f in args.format.split(",") if f.strip()),
                            precisions=tuple(p.strip() for p in args.precision.split(",")
                                             if p.strip()),
                            quant=QuantOptions(method=args.quant_method,
                                               max_accuracy_drop=args.max_accuracy_drop,
                                               activation_bits=args.activations,
                                               force=args.force),
                            calibration=args.calibration, reset=args.reset,
                            input_margin=args.input_margin, input_bounds=args.input_bounds,
                            batch=args.batch)
    manifest_path = export_model_dir(ckpt, args.out, options, task=task)
    raw = json.loads(manifest_path.read_text())
    for f in raw["files"]:
        if f["graph"] == "identity":
            continue  # the benchmark floor graph: no model in it to compare
        e = f["error_vs_torch"]
        quality = f.get("accuracy") or f.get("quality")
        gate = (f"tolerance {raw['check']['tolerance']:g}" if f["precision"] == "fp32"
                else "recorded, not gated")
        agree = (f", argmax agreement {e['argmax_agreement']:.4f}"
                 if e.get("argmax_agreement") is not None else "")
        measured = (f", {quality['metric'].split(' of ')[0]} {quality['test']:.4g} (torch fp32 "
                    f"{quality['torch_fp32']:.4g})" if quality else "")
        batch = f", {f['batch']} streams/call" if f.get("batch", 1) > 1 else ""
        print(f"{f['path']}: {f['size_bytes']} bytes, {f['samples_per_call']} sample(s)/call"
              f"{batch}, "
              f"error vs torch {e['error']:.2e} over {e['steps']} steps ({gate}){agree}"
              f"{measured}")
    if (raw.get("quality") or {}).get("gate", True) is None:
        print(f"note: {raw['quality']['note']}")
    print(f"reset policy: {raw['reset']['policy']} ({raw['reset']['description']})")
    print(f"wrote {manifest_path}")
    return 0


def _load_exportable(args: argparse.Namespace):
    """A checkpoint file, or ``FILE.py:CLASS`` (a user's own model) with ``--weights``."""
    from wavedge.models.checkpoint import load_checkpoint
    from wavedge.models.own import load_own_model

    spec = str(args.checkpoint)
    if spec.endswith(".py"):  # the class left out: it had been read as a torch checkpoint
        spec += ":"
    if ".py:" in spec:
        config = _json_object(args.config, "--config") if args.config else None
        return load_own_model(spec, args.weights, config)
    if args.weights is not None or args.config is not None:
        raise InputError("--weights and --config go with a model given as FILE.py:CLASS")
    return load_checkpoint(args.checkpoint, expect_arch=args.arch)


def _cmd_upgrade(args: argparse.Namespace) -> int:
    from wavedge.manifest import MODEL_VERSION, load_manifest, verify_present, write_manifest

    m = load_manifest(args.model_dir, verify_files=False)  # a version-1 one comes upgraded
    absent = verify_present(m)  # a board's pruned copy is upgraded too, its absent files named
    if m.version != MODEL_VERSION:  # else nothing to write, on a read-only copy neither
        write_manifest(m.directory, m.raw)
    print(f"{m.directory / 'manifest.json'}: version {MODEL_VERSION}"
          + (" already; nothing written" if m.version == MODEL_VERSION else "")
          + (f"; listed but not here, left listed: "
             f"{', '.join(f.path for f in absent)}" if absent else ""))
    return 0


def _file_text(f) -> str:
    if f.graph == "identity":
        return f"{f.format} benchmark floor, {f.size_bytes} bytes"
    batch = f", {f.batch} streams" if f.batch > 1 else ""
    return (f"{f.format} {f.precision} {f.graph}, {f.samples_per_call}/call{batch}, "
            f"{f.size_bytes} bytes, error vs torch {f.error_vs_torch.get('error', float('nan')):.1e}")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from wavedge.manifest import load_manifest, verify_present
    from wavedge.runtime.model import check_loadable

    m = load_manifest(args.model_dir, verify_files=not args.ignore_missing)
    absent = verify_present(m) if args.ignore_missing else []
    if absent and all(f in absent for f in m.files if f.graph == "step"):  # as sha256sum's
        raise ManifestError(f"{m.directory}: none of its step graphs is here (it lists "
                            f"{', '.join(f.path for f in m.files if f.graph == 'step')})")
    if args.json:
        print(json.dumps(m.raw, indent=2))
        return 0
    sig = m.signature
    loaded = check_loadable(m, skip=absent)
    rate = f"{sig.sample_rate_hz:g} Hz" if sig.sample_rate_hz else "no fixed rate"
    which = f"{len(m.files) - len(absent)} of {len(m.files)} here" if absent else "verified"
    print(f"{m.name} ({m.raw['family']}), manifest version {m.raw['version']}: files {which} "
          f"(sha256; loaded and matched to the signature by {', '.join(loaded) or 'no installed backend'})")
    for i in sig.inputs:
        what = f"{', '.join(i.channels)}" if i.channels else f"shape {list(i.shape)}"
        extra = " normalised in-graph" if i.normalise else ""
        extra += f" in [{i.range[0]}, {i.range[1]})" if i.range else ""
        if i.role == "noise":
            print(f"  input:  {i.name} {i.dtype} {i.role} {what}, filled by the stream "
                  "(zeros: the mean network; `run --noise sample` draws it)")
            continue
        print(f"  input:  {i.name} {i.dtype} {i.role} {what}{extra}, at {rate}")
    for o in sig.outputs:
        print(f"  output: {o.name} {o.kind} {list(o.shape)}"
              + (f" ({', '.join(o.labels)})" if o.labels else "")
              + (f", variance in {o.variance}" if o.variance else ""))
    for s in sig.state:
        reset = "a reset tensor" if s.reset is not None else f"{s.reset_value:g}"
        print(f"  state:  {s.name} {list(s.shape)} {s.dtype}, reset to {reset}")
    print(f"  resets: {m.reset_policy.text()} ({m.reset_policy.describe()})")
    for f in m.files:
        print(f"  file:   {f.path} [{_file_text(f)}]" + (" (not here)" if f in absent else ""))
    acc = (m.raw.get("training") or {}).get("test_accuracy")
    if acc is not None:
        print(f"  trained: {m.raw['training'].get('task')}, test accuracy {acc:.3f} (from reset)")
    quality = m.raw.get("quality") or {}
    if quality.get("metric"):
        print(f"  checked: {quality['metric']}: {quality['torch_fp32']:.4g} (torch fp32) on "
              f"{quality['task']}")
    if (m.raw.get("quality") or {}).get("gate", True) is None:
        print(f"  quality: {m.raw['quality']['note']}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """`wavedge run`; with ``--summary``, a run refused before it began writes its error
    there too, so that the file always tells of this run, not the one before."""
    from wavedge.runtime.loop import Summary

    if not args.summary:
        return _run(args)
    _summary_folder(Path(args.summary))
    # before the file is written: a URL of an unknown scheme is left to the run, which is
    # refused in its own words and writes them there
    _no_file_written_twice(args.source or [], args.sink or [], args.summary, known_only=True)
    try:
        return _run(args)
    except WavedgeError as exc:
        _wrote_summary(Path(args.summary), Summary(error=str(exc)))
        raise


def _run(args: argparse.Namespace) -> int:
    from wavedge.runtime import BackendOptions
    from wavedge.runtime.loop import run, run_many

    options = BackendOptions(threads=args.threads, providers=tuple(args.provider or ("cpu",)),
                             trt_cache=args.trt_cache)
    resets = _run_checks(args)
    urls = args.source or [None]
    model, how = _load_for_run(args, options, len(urls))
    resets = resets or model.manifest.reset_policy
    _check_noise(args, model.manifest)
    events = _events(args).check(model.manifest.signature)
    urls = [u if u is not None else _recording_url(model, args.model_dir) for u in urls]
    _no_file_written_twice(urls, args.sink)
    sources, sink = _open_ends(urls, args.sink, model.manifest)
    wait_ms = _tick_wait_ms(args, model)
    line = _run_line(model, args, urls, resets, how, wait_ms, events)
    started = lambda: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if len(urls) == 1:
        stream = model.stream(args.policy, noise=args.noise, seed=args.seed)
        summary = run(stream, sources[0], sink, limit=args.limit, resets=resets,
                      signals=True, started=started, status_every_s=args.status_every,
                      events=events)
    else:
        summary = run_many(_streams(model, args, len(urls)), sources, sink, limit=args.limit,
                           resets=resets, signals=True, started=started,
                           tick_wait_ms=wait_ms, status_every_s=args.status_every,
                           events=events)
    try:
        if sys.stdout is not None:  # None: started with it closed (`>&-`), a null sink
            sys.stdout.flush()
    except OSError:  # `| head` gone or a full disk: nothing more can reach stdout, not at exit
        _drop_stdout()
    for line in summary.lines(error=False):  # the error is the last line, once
        print(f"wavedge: {line}", file=sys.stderr)
    written = not args.summary or _wrote_summary(Path(args.summary), summary)
    if summary.error:
        print(f"wavedge: error: {summary.error}", file=sys.stderr)
        return 1
    if not written:
        return 1
    if summary.all_rejected:
        print(f"wavedge: error: every one of the {sum(summary.dropped.values())} samples from "
              f"{', '.join(urls)} was rejected; the model takes {model.manifest.input_size} "
              f"channel(s) ({', '.join(model.manifest.channels)})", file=sys.stderr)
        return 1
    return 0


def _summary_folder(path: Path) -> None:
    """The folder ``--summary`` writes in, made now, so that a run that could not write its
    summary finds out before it runs, not after."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--summary {path}: cannot make its folder ({reason(exc)})") from None
    if path.is_dir() or not os.access(path.parent, os.W_OK):
        raise InputError(f"--summary {path}: " + ("is a folder; give a file name"
                                                  if path.is_dir() else
                                                  f"cannot write in {path.parent}"))


def _wrote_summary(path: Path, summary) -> bool:
    """The summary as JSON, whole or not at all (a script never reads half of one); False,
    said in one line, where it could not be written."""
    try:
        stopping.write_whole(path, json.dumps(summary.to_json(), indent=1, sort_keys=True)
                             + "\n")
    except OSError as exc:
        print(f"wavedge: error: --summary {path}: cannot write ({reason(exc)})", file=sys.stderr)
        return False
    return True


def _open_ends(urls: list, sink_urls: list, manifest):
    """The run's sources and its sink (``Sinks`` for several), or nothing left open."""
    from wavedge.runtime import open_sink, open_source
    from wavedge.runtime.sinks import Sinks

    sources, sinks = [], []
    try:
        for url in urls:
            sources.append(open_source(url, manifest))
        for url in sink_urls:  # a file sink's file is started anew as the run begins
            sinks.append(open_sink(url, manifest))
        sink = sinks[0] if len(sinks) == 1 else Sinks(sinks)
        if (check := getattr(sink, "check_streams", None)) is not None:
            check(len(urls))  # a sink that numbers the sources (link:?stream=S): now, not later
    except BaseException:
        for opened in [*sources, *sinks]:
            opened.close()
        raise
    return sources, sink


def _run_checks(args: argparse.Namespace):
    """What `wavedge run` refuses before it loads the model; its reset policy, when given."""
    from wavedge.resets import ResetPolicy

    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    check_count(args.seed, "--seed", 0)
    resets = ResetPolicy.parse(args.reset, "--reset") if args.reset else None
    urls = args.source or [None]
    if args.tick_wait is not None and not 0 <= args.tick_wait <= 1000:
        raise InputError(f"--tick-wait: between 0 and 1000 ms, got {args.tick_wait:g}")
    if args.status_every is not None and not 0.1 <= args.status_every <= 86400:
        raise InputError(f"--status-every: between 0.1 and 86400 seconds, got "
                         f"{args.status_every:g}")
    for flag, given in (("--tick-wait", args.tick_wait is not None),
                        ("--group", args.group != "auto")):
        if given and len(urls) == 1:
            raise InputError(f"{flag}: for a run of several sources (repeat --source)")
    _one_reader_each([u for u in urls if u is not None])  # the recording is no device
    args.sink = args.sink or ["stdout:"]
    _one_target_each(args.sink)
    for sink in args.sink:
        _one_protocol_a_port([u for u in urls if u is not None], sink)
    return resets


def _events(args: argparse.Namespace):
    """What the run writes of a classifier's results (``wavedge.runtime.events``)."""
    from wavedge.runtime.events import Events

    return Events(1 if args.smooth is None else args.smooth, bool(args.on_change),
                  args.min_score or 0.0)


def _check_noise(args: argparse.Namespace, manifest) -> None:
    if args.noise == "sample" and not manifest.signature.noise:
        raise InputError(f"--noise sample: {manifest.name} has no noise input (it is "
                         "not a stochastic network)")


def _pipeline_actions() -> list[argparse.Action]:
    """The run's options a service passes on (``_add_pipeline_options``), in their order."""
    return _add_pipeline_options(argparse.ArgumentParser(add_help=False), defaults=False)


def _check_service_run(svc, model_here: Path) -> None:
    """A service restarts its run 2 s after each failure, for ever: refuse now what the run
    would refuse at every start (its options, the model directory and the graph they pick,
    the URLs' schemes, a file named by a relative path), reading the unit's command line with
    the run's own parser. Nothing is opened: a serial device may not be plugged in yet."""
    from wavedge.manifest import load_manifest, verify_file
    from wavedge.runtime.backends import check_providers
    from wavedge.runtime.model import step_entry
    from wavedge.runtime.urls import files_of

    args = build_parser().parse_args(svc.run_argv())
    _run_checks(args)
    _no_file_written_twice(args.source or [], args.sink, args.summary)
    # by the backend's list, not this machine's build: an image may be made elsewhere
    check_providers(args.backend, tuple(args.provider or ("cpu",)))
    manifest = load_manifest(model_here, verify_files=False)  # the run checks what it loads
    verify_file(manifest, step_entry(manifest, args.backend, args.precision, len(args.source),
                                     in_turn=args.group != "always"))
    _check_noise(args, manifest)
    _events(args).check(manifest.signature)
    named = [(f"--{kind} {url}", path) for kind, urls in (("source", args.source),
                                                          ("sink", args.sink))
             for url in urls for path in files_of(url, kind)]
    named += [(flag, path) for flag, path in (("--trt-cache", args.trt_cache),
                                              ("--summary", args.summary)) if path]
    for flag, path in named:
        if not Path(path).is_absolute():
            raise InputError(f"{flag}: {path} is a relative path, and a service runs in /; "
                             f"give its absolute path ({Path(path).resolve()})")


def _one_reader_each(urls: list) -> None:
    """Standard input, a port (``serial://``, a microcontroller's ``link:``) and a broker
    session can feed one stream only (each source module says what it reads)."""
    from wavedge.runtime.urls import reader_of

    seen = set()
    for url in urls:
        what, why = reader_of(url) or (None, "")
        if what is not None and what in seen:
            raise InputError(f"--source {url}: {what} is already a source of this run ({why})")
        seen.add(what)


def _one_target_each(sinks: list) -> None:
    """Two sinks of a run on one target would interleave their records in it: standard
    output (``stdout:``, ``jsonl:-``, ``csv:-``), one file, one port."""
    from wavedge.runtime.urls import files_of, parse_url, reader_of

    seen: dict = {}
    for url in sinks:
        files = files_of(url, "sink")
        if files:
            target = f"the file {Path(files[0]).resolve()}"
        elif parse_url(url).scheme in ("stdout", "jsonl", "csv"):
            target = "standard output"
        else:
            target = (reader_of(url, "sink") or (None,))[0]
        if target is not None and target in seen:
            raise InputError(f"--sink {url}: {target} is already written by --sink "
                             f"{seen[target]}; give each sink its own")
        seen[target] = url


def _no_file_written_twice(urls: list, sinks: list, summary: str | None = None,
                           known_only: bool = False) -> None:
    """A file sink, or ``--summary``, on a file a source reads (the recording replayed, one
    in its folder or its glob's) would start it anew before it was read, or add results to
    the samples: `--source replay:log.csv --sink csv:log.csv` had read nothing and left the
    user's recording a header; a results file in a replayed folder is read as a recording next
    time. A summary on a sink's file had replaced the results at the end."""
    from wavedge.recordings import reads
    from wavedge.runtime.urls import files_of

    def files(url: str, kind: str) -> list[str]:
        try:
            return files_of(url, kind)
        except InputError:
            if known_only:
                return []
            raise

    taken = [(reads(Path(name)), f"is read by --source {url}")
             for url in urls for name in files(url, "source")]
    written = [(f"--sink {sink}", name) for sink in sinks for name in files(sink, "sink")]
    if summary:  # the sinks' files are the summary's to keep off too (each other's: _run_checks)
        taken += [(reads(Path(name)), f"is written by {flag}") for flag, name in written]
        written = [(f"--summary {summary}", summary)]
    for flag, name in written:
        why = next((why for takes, why in taken if takes(Path(name))), None)
        if why is not None:
            raise InputError(f"{flag}: {name} {why}; give it a file of its own")


def _one_protocol_a_port(urls: list, sink: str) -> None:
    """A sink's port read by a source of another scheme (CSV lines by ``serial://``, frames
    by ``link:``) speaks two protocols at once: the sink's HELLO had gone to a board that
    sends lines, and the run ended in "no HELLO from the board". The same scheme both ways
    shares the port (its module's business: ``link:`` shares one link)."""
    from wavedge.runtime.urls import parse_url, reader_of

    port, scheme = (reader_of(sink, "sink") or (None,))[0], parse_url(sink).scheme
    if port is None:
        return
    for url in urls:
        if (reader_of(url) or (None,))[0] == port and parse_url(url).scheme != scheme:
            raise InputError(f"--sink {sink}: {port} is also read by --source {url}, and a "
                             f"port carries one protocol; give the board {scheme}: both ways, "
                             "or another port")


def _recording_url(model, model_dir) -> str:
    return f"replay:{model.manifest.own_recording('give --source URL')}"


def _load_for_run(args, options, n: int):
    """The model a run steps and, for several sources, how it steps them (one call of a batch
    graph per tick, or in turn) and why: by default the way measured cheaper here, now."""
    from wavedge.runtime import load_model

    def load(streams: int, in_turn: bool = False):
        # a run pushes one sample at a time: no chunk graph (a batch-8 one is 58-83 KB of
        # graph and its session or interpreter)
        return load_model(args.model_dir, args.backend, args.precision, options,
                          use_chunk=False, streams=streams, in_turn=in_turn)

    if n == 1 or args.group == "never":
        return load(1), None if n == 1 else "stepped in turn (--group never)"
    model = load(n, in_turn=args.group == "auto")
    if model.batch == 1:
        return model, f"stepped in turn (`wavedge export --batch {n}` steps them in one call)"
    how = f"one call of the batch-{model.batch} step graph per tick"
    if args.group == "always":
        return model, how + " (--group always)"
    from wavedge.runtime.bench import group_against_turn

    single = load(1)
    try:
        grouped, turn = group_against_turn(model, single, n)
    except InputError as exc:  # the example inputs refused (a model's tight bounds)
        return model, how + f" (not measured against in turn: {exc})"
    if turn < grouped:
        return single, (f"stepped in turn (measured {turn:.1f} us a tick against {grouped:.1f} "
                        f"for one call of the batch-{model.batch} step graph)")
    return model, how + f" (measured {grouped:.1f} us a tick against {turn:.1f} in turn)"


def _tick_wait_ms(args, model) -> float:
    from wavedge.runtime.fanin import default_wait_ms

    if args.tick_wait is not None:
        return args.tick_wait
    # streams stepped in turn gain nothing from a fuller tick: each is its own call
    return default_wait_ms(model.manifest.sample_rate_hz) if model.batch > 1 else 0.0


def _streams(model, args, n: int):
    """n streams: a group on the model's batch graph, or n streams stepped in turn."""
    seeds = [args.seed + k for k in range(n)]  # distinct draws per stream, from --seed up
    if model.batch == 1:
        return [model.stream(args.policy, noise=args.noise, seed=s) for s in seeds]
    group = model.group()
    for k, seed in enumerate(seeds):
        group.add(k, args.policy, args.noise, seed)
    return group


def _run_line(model, args, urls: list, resets, how: str | None, wait_ms: float,
              events) -> str:
    """The line a run starts with: model, backend, graphs, sources, sink, policies."""
    g = model.step_graph
    providers = f" {', '.join(g.detail['providers'])}" if g.detail.get("providers") else ""
    if len(urls) == 1:
        where = f"source {urls[0]}"
    else:
        if wait_ms:
            how += f", a tick waiting up to {wait_ms:g} ms for every source"
        where = f"{len(urls)} streams, {how}; sources " + ", ".join(
            f"[{k}] {u}" for k, u in enumerate(urls))
    line = (f"wavedge: {model.manifest.name} on {g.detail.get('library', model.backend)}"
            f"{providers}, {model.precision}, step graph; {where}, "
            f"sink{'s' if len(args.sink) > 1 else ''} {', '.join(args.sink)}, policy "
            f"{args.policy}, resets {resets.text()}")
    if model.signature.noise:
        line += f", noise {args.noise}" + (f" (seed {args.seed})" if args.noise == "sample"
                                           else " (the mean network)")
    if events.active:
        line += f", writes results {events.describe()}"
    return line


def _out_folder(path: Path | None) -> None:
    """Make a command's ``--out`` folder before it works, so that one it cannot make ends it
    at once (an OSError, one line), not after minutes of measuring."""
    if path is not None:
        if path.exists() and not path.is_dir():
            raise InputError(f"{path}: exists and is not a folder")
        path.mkdir(parents=True, exist_ok=True)


def _cmd_bench(args: argparse.Namespace) -> int:
    from wavedge.runtime import bench

    if args.compare:
        a, b = (bench.load_report(p) for p in args.compare)
        print(bench.compare(a, b, str(args.compare[0]), str(args.compare[1])))
        return 0
    if args.model_dir is None:
        raise InputError("bench: give MODEL_DIR, or --compare A.json B.json")
    options = bench.BenchOptions(
        samples=args.samples, repeats=args.repeats, warmup=args.warmup, threads=args.threads,
        providers=tuple(args.provider or ("cpu",)), trt_cache=args.trt_cache, pin_cpu=args.pin,
        rates_hz=tuple(args.rate or ()), window=args.window,
        backends=tuple(args.backend or ()), precisions=tuple(args.precision or ()),
        streams=args.streams, paced_s=args.paced)
    options.validate()
    if args.profile:
        return _profile(args, options)
    _out_folder(args.out)  # after the options' checks: a refused run leaves no folder
    baselines = None
    if args.checkpoint is not None:
        try:
            from wavedge.models.bench_baselines import baselines as make_baselines
        except ImportError:  # a board without torch
            baselines = ()
        else:
            baselines = make_baselines(args.checkpoint, args.threads)
    report = bench.run_bench(args.model_dir, options,
                             progress=lambda m: print(f"wavedge: bench {m}", file=sys.stderr),
                             baselines=baselines)
    print(bench.format_table(report))
    if args.out is not None:
        for path in bench.write_report(report, args.out):
            print(f"wrote {path}")
    return 0


def _profile(args: argparse.Namespace, options) -> int:
    """`bench --profile`: ONNX Runtime's per-node profile of each graph, as a table."""
    from wavedge.runtime.profile import format_profile, run_profile

    for flag, given in (("--checkpoint", args.checkpoint), ("--streams", args.streams > 1),
                        ("--rate", args.rate), ("--pin", args.pin is not None)):
        if given:
            raise InputError(f"bench --profile: {flag} is for the timing bench, not the profile")
    _out_folder(args.out)
    report = run_profile(args.model_dir, options, args.out,
                         progress=lambda m: print(f"wavedge: bench {m}", file=sys.stderr))
    print(format_profile(report))
    if args.out is not None:
        path = args.out / "profile.json"
        stopping.write_whole(path, json.dumps(report, indent=1) + "\n")
        print(f"wrote {path}")
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from wavedge import probe

    units = as_names(args.units or "")
    if args.units is not None and not units:
        raise InputError(f"probe: --units {args.units!r} names no output or state")
    options = probe.ProbeOptions(zones=args.zones, permutations=args.permutations,
                                 units=units, skip=args.skip, seed=args.seed)
    options.validate()
    _out_folder(args.out)  # after the options' checks: a refused run leaves no folder
    report = probe.run_probe(args.model, args.data, options, args.backend, args.precision,
                             args.untrained)
    print(f"probe: {report.source}, {report.samples} samples of {report.recordings} recordings "
          f"({', '.join(report.label_names)}), {options.zones} zones per unit, "
          f"{options.permutations} permutations of the recordings' labels")
    print(probe.table(report.summary))
    for name, text in report.verdict.items():
        print(f"{name}: {text}")
    if args.out is not None:
        stopping.write_whole(args.out / "probe.json", json.dumps(report.to_json(), indent=1) + "\n")
        wrote = ["probe.json"] + (["probe.png"] if probe.plot(report.summary,
                                                               args.out / "probe.png") else [])
        print(f"wrote {', '.join(str(args.out / w) for w in wrote)}")
    return 0


def _cmd_service(args: argparse.Namespace) -> int:
    from wavedge import service
    from wavedge.resets import ResetPolicy
    from wavedge.runtime.urls import kept

    root = args.root.resolve()
    if args.action == "uninstall":
        removed = service.uninstall(args.name, root, activate=not args.no_activate)
        print(f"removed {', '.join(map(str, removed))}")
        return 0
    if args.model_dir is None or args.source is None or args.sink is None:
        raise InputError("service install: give NAME MODEL_DIR --source URL --sink URL")
    if args.reset is not None:  # in its own spelling: 'recording, gap:2' as one word
        args.reset = ResetPolicy.parse(args.reset, "--reset").text()
    options = {a.option_strings[0][2:]: getattr(args, a.dest) for a in _pipeline_actions()
               if getattr(args, a.dest) is not None}
    sinks = tuple(kept(s) for s in args.sink)
    svc = service.Service(args.name, service.target_path(args.model_dir, root),
                          tuple(args.source), sinks, options, args.user, args.wavedge or "")
    _check_service_run(svc, args.model_dir)
    if args.print:
        env = service.paths(svc.name, Path("/"))["env"]
        print(service.unit_text(svc, env) + "\n" + service.env_text(svc)
              + ("\n" + service.udev_text(svc) if service.udev_text(svc) else ""), end="")
    else:
        again = service.paths(svc.name, root)["unit"].is_file()
        written = service.install(svc, root, activate=not args.no_activate)
        if args.no_activate:
            state = "not activated"
        elif root != Path("/"):
            state = "enabled in the image (it starts when the board boots)"
        else:
            state = "enabled and restarted" if again else "enabled and started"
        print(f"{svc.unit_name}: {'replaced' if again else 'written'}, {state}; "
              f"{', '.join(map(str, written))}")
    for sink, given in zip(sinks, args.sink):  # said after the install: a refusal stays one line
        if sink != given:
            print(f"wavedge: --sink {sink}: appends, so the file keeps its results across the "
                  "service's restarts (give append=0 to start it anew at each)", file=sys.stderr)
    return 0


def _cmd_firmware(args: argparse.Namespace) -> int:
    import shutil

    from wavedge.firmware_bridge.standin import C_DIR

    out = args.out
    sketch = out / "wavedge_bridge"
    pairs = [(C_DIR / name, dest) for name in ("wb_frame.h", "wb_frame.c")
             for dest in (out / name, sketch / name)]
    pairs.append((C_DIR / "arduino" / "wavedge_bridge" / "wavedge_bridge.ino",
                  sketch / "wavedge_bridge.ino"))
    # a sketch is made to be edited: a copied-out file that differs is the user's work
    same = {d: d.is_file() and d.read_bytes() == s.read_bytes() for s, d in pairs}
    changed = [d for _, d in pairs if d.is_file() and not same[d]]
    if changed and not args.force:
        raise InputError(f"firmware: {changed[0]} differs from this wavedge's copy"
                         + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else "")
                         + "; --force replaces them, or give another --out")
    _out_folder(out)
    sketch.mkdir(parents=True, exist_ok=True)
    for src, dest in pairs:
        if not same[dest]:
            try:  # whole: a file cut short by a full disk had to be --force'd over after
                with stopping.replaced_whole(dest) as part:
                    shutil.copyfile(src, part)
            except OSError as exc:  # a full disk's error names no file
                exc.filename = str(dest)
                raise
        print(f"{'unchanged' if same[dest] else 'wrote'} {dest}")
    return 0


def _add_backend_settings(p: argparse.ArgumentParser, defaults: bool = True) -> list:
    return [p.add_argument("--provider", action="append", choices=["cpu", "cuda", "tensorrt"],
                           help="onnxruntime execution provider, in preference order (default "
                                "cpu)"),
            p.add_argument("--trt-cache", metavar="DIR",
                           help="TensorRT's engine cache, so a restart does not rebuild the "
                                "engines (default: a service's cache folder, else "
                                "~/.cache/wavedge/trt)"),
            p.add_argument("--threads", type=int, default=1 if defaults else None,
                           help="backend threads, and torch's in bench (default 1)")]


def _add_pipeline_options(p: argparse.ArgumentParser, defaults: bool = True) -> list:
    """The options of `wavedge run` after its source and sink, declared once: `service
    install` takes the same ones (without defaults: those given go into its unit)."""
    added = []

    def add(*flags, default=None, **kwargs):
        added.append(p.add_argument(*flags, default=default if defaults else None, **kwargs))

    add("--group", default="auto", choices=["auto", "always", "never"],
        help="several sources on a model with a batch graph for them: auto (the default) "
             "steps them by one call per tick or in turn, whichever it measures cheaper at "
             "start (tens of milliseconds; a batch graph costs the same for any number of "
             "members); always or never to choose")
    add("--tick-wait", type=float, metavar="MS",
        help="several sources: how long a tick waits, after its oldest sample arrived, for "
             "every source to have one, so that sensors sampled at the same instants are "
             "stepped in one call (default: one sample period at the model's rate, at most "
             "2 ms; 0 steps whatever has arrived)")
    add("--backend", default="onnxruntime", choices=["onnxruntime", "litert"])
    add("--precision", default="fp32", help="artefact precision (default fp32)")
    add("--policy", default="reject", choices=["reject", "hold", "zero"],
        help="bad samples (wrong length, non-numeric, NaN/inf): reject = drop and count, "
             "hold = repeat the last good value, zero = use 0")
    add("--noise", default="zero", choices=["zero", "sample"],
        help="a stochastic model's noise inputs: zero = the deterministic mean network with "
             "its variance (default, measured: docs/paper-mpl.md), sample = one stochastic "
             "pass, seeded by --seed")
    add("--seed", type=int, default=0,
        help="--noise sample: the seed (0; stream k of several sources: seed + k)")
    add("--reset", metavar="POLICY",
        help="when to reset the state: never, recording (at each change of the source's "
             "sequence column, and at its header sent again), every:N samples, gap:SECONDS "
             "between samples; comma-separated (default: the model directory's, which says "
             "how it was trained and checked)")
    add("--smooth", type=int, metavar="N",
        help="a classifier: each result's class probabilities averaged over the last N "
             "samples of its stream, in every sink (default 1: none)")
    add("--on-change", action="store_true",
        help="a classifier: write a result only when its class changes (after --smooth), "
             "for a board that acts on it; the summary still scores every sample")
    add("--min-score", type=float, metavar="P",
        help="a classifier: write a result only when its score (after --smooth) is at least "
             "P, between 0 and 1")
    add("--summary", metavar="FILE",
        help="also write the end's summary to FILE as JSON (samples, drops, latency, the "
             "truth's score, what was written), for a script or a service's last run")
    add("--status-every", type=float, metavar="SECONDS",
        help="a status line on stderr every SECONDS while the run lasts: samples, their rate, "
             "drops and repairs, latency (a service's journal; default: the summary at the "
             "end only)")
    return added + _add_backend_settings(p, defaults)


class _Version(argparse.Action):
    """argparse's own "version" action takes a fixed string; this report looks at the install
    (its backends and extras) only when asked."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from wavedge.about import report

        print(report(), flush=True)  # a full disk's error now, not as Python exits
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """argparse's, but ``--help`` that cannot be written says so: argparse drops its own
    write errors, so ``wavedge --help > /dev/full`` had printed nothing and exited 0."""

    def print_help(self, file=None) -> None:
        out = file if file is not None else sys.stdout
        if out is not None:
            out.write(self.format_help())
            out.flush()

    def error(self, message: str):
        """argparse's one line, with a hint when what is left over are files: an unquoted
        ``--data logs/*.csv`` is expanded by the shell into one file for ``--data`` and the
        rest unrecognized."""
        left = message.partition("unrecognized arguments: ")[2].split()
        if left and all(Path(a).exists() for a in left):
            message += (" (a table is one argument: a glob the shell expanded? "
                        "quote it, 'logs/*.csv', or give their folder)")
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wavedge", description="Train, export and stream brain-inspired sequence models.")
    parser.add_argument("-V", "--version", action=_Version,
                        help="print the version and what this install can run, then exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_export, _add_run, _add_bench, _add_probe, _add_service,
                _add_firmware, _add_upgrade, _add_inspect):  # the order --help lists them in
        add(sub)
    return parser


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model on a bundled dataset or your own recordings "
                                     "(needs the export extra)",
                       description="Train a model with its default recipe; writes a checkpoint "
                                   "holding the test accuracy.")
    p.add_argument("--task", help="a bundled dataset: basic_motions (default), digits, "
                                  "digit_rows (each with its recipes, wavedge.models.train); "
                                  "or generated walks: grid_walks (for tem_t; 5x5 grids of "
                                  "45 observations, or grid_walks?width=W&height=H&"
                                  "observations=N)")
    p.add_argument("--data", metavar="FILE",
                   help="train on your own labelled recordings instead: a CSV with a header, "
                        "one sample per row, a 'label' column, a sequence column splitting "
                        "recordings of any length, optionally a timestamp column; keys after "
                        "'?' map columns; or X.npy?labels=y.npy (docs/own-data.md). With "
                        "--arch tem_t: your logged walks, rows of observation and action ids, "
                        "a sequence column splitting walks, optionally place and label "
                        "(docs/tem.md)")
    p.add_argument("--validation", type=float, default=0.25,
                   help="--data: fraction of the recordings (stratified) or walks held out (0.25)")
    p.add_argument("--reset", choices=["never", "recording"],
                   help="train for streams that never reset (recordings back to back, the "
                        "state carried) or that reset at each recording (default: the "
                        "recipe's, never)")
    p.add_argument("--window", type=int,
                   help="--data of recordings of unequal length: samples per training window "
                        "(default: the shortest recording; equal ones train whole)")
    p.add_argument("--config", help="override the recipe's architecture arguments, as JSON "
                                    "(e.g. '{\"channels\": 8, \"ring_size\": 32}')")
    p.add_argument("--arch", default="wave_rnn",
                   help="wave_rnn (default), irnn, gru, residual_attention (a transformer "
                        "with the value stream, docs/attention.md; basic_motions and --data); "
                        "mpl (the spike-and-slab RNN) on digit_rows; tem_t (TEM-t, "
                        "docs/tem.md) on grid_walks or --data walks")
    p.add_argument("--learning", choices=["backprop", "pc"],
                   help="override the recipe's learning rule: backprop (BPTT), or pc "
                        "(predictive coding, the mpl family's default)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write (.pt)")
    p.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    p.add_argument("--quant-aware-epochs", type=int, metavar="N",
                   help="override the recipe's int8-aware fine-tuning epochs (0 for none)")
    p.add_argument("--seed", type=int, help="override the recipe's seed (default 0)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--device", default="cpu",
                   help="where torch trains: cpu (default), cuda, cuda:N, mps, or auto (a GPU "
                        "where torch sees one); the checkpoint is the same either way, up to "
                        "rounding")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to a checked ONNX model directory",
                       description="Export the step and chunk graphs, check both against torch "
                                   "over long held-out streams, write manifest.json.")
    p.add_argument("checkpoint", type=Path, metavar="MODEL",
                   help="a checkpoint (.pt from `wavedge train`), or FILE.py:CLASS: your own "
                        "StepModel subclass (with --weights; docs/own-model.md)")
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--weights", type=Path,
                   help="FILE.py:CLASS: a state_dict saved with torch.save")
    p.add_argument("--config", help="FILE.py:CLASS: the constructor's keyword arguments as "
                                    "JSON (default none)")
    p.add_argument("--data", metavar="FILE",
                   help="check against your own recordings (CSV with the model's channels in "
                        "its header, a 'label' or 'target' column, an optional sequence "
                        "column; column keys after '?', docs/own-data.md): held out, "
                        "calibration and the quality gate")
    p.add_argument("--reset", metavar="POLICY",
                   help="the reset policy to check under and write into the model directory: "
                        "never, recording, every:N, gap:SECONDS (default: how the checkpoint "
                        "was trained)")
    p.add_argument("--input-margin", type=float, default=1.0,
                   help="the raw input range the runtime accepts: the recordings' range "
                        "widened by this many times its span on each side (1.0)")
    p.add_argument("--input-bounds", metavar="LOW:HIGH|CH=LOW:HIGH,...|none",
                   help="the accepted input range instead, for every channel or by name; "
                        "'none': accept any finite value")
    p.add_argument("--arch", help="refuse a checkpoint of any other architecture")
    p.add_argument("--chunk", type=int, default=32,
                   help="samples per chunk-graph call (32; 2 to 1024)")
    p.add_argument("--batch", type=int, default=1, metavar="N",
                   help="also write step and chunk graphs of N streams per call, for stream "
                        "groups (`wavedge run` with several sources, `bench --streams`)")
    p.add_argument("--tolerance", type=float,
                   help="largest allowed error of either graph vs torch (default: the "
                        "model's, 1e-5 unless its family says otherwise)")
    p.add_argument("--check-steps", type=int, default=2048,
                   help="length of the held-out check stream (2048; 1000 to 1000000)")
    p.add_argument("--recording", action="store_true",
                   help="also write the test split as recording.csv")
    p.add_argument("--format", default="onnx",
                   help="comma-separated: onnx, tflite (tflite needs the tflite extra)")
    p.add_argument("--precision", default="fp32",
                   help="comma-separated: fp32, int8 (int8 weights; see docs/quantisation.md)")
    p.add_argument("--quant-method", default="static", choices=["static", "dynamic"],
                   help="int8 ONNX: static (calibrated on the training recordings streamed "
                        "with the state carried; the default, measured) or dynamic (int8 "
                        "weights of the matmuls, activations quantised on the fly, the "
                        "recurrence in fp32)")
    p.add_argument("--activations", type=int, default=16, choices=[8, 16],
                   help="int8 artefacts (static ONNX, full-integer TFLite): activation bits, "
                        "the state included (16, measured; 8 loses accuracy on recurrences)")
    p.add_argument("--calibration", metavar="FILE",
                   help="int8: calibrate on these sensor recordings (CSV with the model's "
                        "channels in its header or mapped by column keys after '?', a sequence "
                        "column splitting recordings, or .npy [N, T, D]); default: the task's "
                        "training split")
    p.add_argument("--max-accuracy-drop", type=float, default=1.0,
                   help="points of test accuracy an int8 artefact may lose (1.0)")
    p.add_argument("--force", action="store_true",
                   help="write an int8 artefact that misses the accuracy gate anyway")
    p.set_defaults(func=_cmd_export)


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="stream a source through a model into a sink (no torch)",
                       description="Stream samples from SOURCE through the model, one at a time, "
                                   "into SINK. Ctrl-C stops with a summary. Sources: "
                                   "replay:[FILE][?rate=HZ|max&loop=N&limit=N] (no FILE: "
                                   "the model's own recording), stdin:, "
                                   "serial://PORT[?baud=N], synthetic:imu[?n=N&rate=HZ], "
                                   "link:PORT (SENSOR frames from a microcontroller), "
                                   "mqtt://HOST/TOPIC, udp://[HOST]:PORT (datagrams of "
                                   "CSV or JSON, a board on WiFi), http://[HOST]:PORT[/PATH] "
                                   "(POSTs of CSV or JSON); ?reply=last answers a serial line, a "
                                   "datagram or a POST with its prediction. Sinks: "
                                   "stdout:[?every=N], jsonl:FILE, csv:FILE, null:, "
                                   "link:PORT (RESULT frames to a microcontroller), "
                                   "udp://HOST:PORT (a datagram of JSON per result), "
                                   "mqtt://HOST[:PORT]/TOPIC[?qos=1&board=ID&env=FILE] (a "
                                   "broker; docs/mqtt.md), http://HOST[:PORT]/PATH or "
                                   "https: (a JSON POST per result, a webhook; ?body=text, slack "
                                   "or discord: one line a result, for ntfy or a chat), "
                                   "serve://[HOST]:PORT[/PATH] (the latest result to whoever "
                                   "GETs it; PATH/stats the run's counters). Any sink takes "
                                   "?smooth=N&on_change=1&min_score=P: of a classifier's "
                                   "results, what it alone is given. A sink of records (all "
                                   "but stdout:, null: and link:) takes ?host_time=1 (this "
                                   "host's clock as each result was made) and "
                                   "?time_format=iso (UTC date-times); a file sink ?append=1 "
                                   "and ?rotate=SIZE&keep=N.")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--source", action="append",
                   help="source URL (default: the model directory's recording); repeat it for "
                        "several streams, source k into stream k: one call per tick for all "
                        "when the model has a batch graph for them (`export --batch N`) and "
                        "that measures cheaper (--group), stepped in turn otherwise; --limit "
                        "then counts per source")
    p.add_argument("--sink", action="append",
                   help="sink URL (default stdout:); repeat it for several, each given every "
                        "result (a file that keeps them all beside a board that acts on them)")
    _add_pipeline_options(p)
    p.add_argument("--limit", type=int, help="stop after this many samples")
    p.set_defaults(func=_cmd_run, output_optional=True)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmark every backend x precision x mode of a model",
                       description="Measure init, first inference, warm-up, latency "
                                   "percentiles, throughput, duty cycle and memory for every "
                                   "installed backend, precision and mode, beside the careful "
                                   "bare loop, the backend's floor, push through the Python "
                                   "alone (where the C fast path is built), torch and numpy "
                                   "step by step, and sliding-window re-inference. Or compare "
                                   "two saved reports.")
    p.add_argument("model_dir", type=Path, nargs="?")
    p.add_argument("--backend", action="append", choices=["onnxruntime", "litert"],
                   help="only this backend (repeatable; default: every installed one)")
    p.add_argument("--precision", action="append", help="only this precision (repeatable)")
    p.add_argument("--samples", type=int, default=2000, help="timed calls per repeat (2000)")
    p.add_argument("--streams", type=int, default=1, metavar="N",
                   help="also time N streams: round-robin, in a group, and one raw batch call "
                        "(needs graphs of batch N or more: wavedge export --batch N)")
    p.add_argument("--repeats", type=int, default=3, help="repeats, spread shown (3)")
    p.add_argument("--warmup", type=int, default=200, help="untimed warm-up calls (200)")
    _add_backend_settings(p)
    p.add_argument("--pin", type=int, metavar="CPU", help="pin the process to this CPU")
    p.add_argument("--rate", type=float, action="append", metavar="HZ",
                   help="also give the duty cycle at this sample rate (repeatable)")
    p.add_argument("--paced", type=float, default=2.0, metavar="SECONDS",
                   help="push on each rate's schedule for this long, asleep in between as a "
                        "run is, and give the latency and duty cycle that costs (2; 0: none)")
    p.add_argument("--window", type=int, default=100,
                   help="samples re-run per step by the sliding-window baseline (100)")
    p.add_argument("--checkpoint", type=Path,
                   help="the model's torch checkpoint, for the torch and numpy baselines")
    p.add_argument("--out", type=Path, help="folder for bench.json and bench.png")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"),
                   help="compare two saved reports instead of measuring")
    p.add_argument("--profile", action="store_true",
                   help="instead of timing: where each ONNX graph's time goes, by op type, "
                        "from ONNX Runtime's profiler (--samples calls after --warmup; with "
                        "--out, profile.json and the traces, which ui.perfetto.dev opens)")
    p.set_defaults(func=_cmd_bench)


def _add_probe(sub) -> None:
    p = sub.add_parser("probe", help="score the label homogeneity of units' activation zones",
                       description="The intra-neuronal attention probe (after Pichat et al. "
                                   "2025; the operationalisation is ours, docs/probe.md): cut "
                                   "each unit's activations over labelled recordings into "
                                   "equal-count zones and score each zone's label purity "
                                   "against the recordings' labels permuted.")
    p.add_argument("model", type=Path, help="a model directory (its exported graph, no torch) "
                                            "or a .pt checkpoint (torch)")
    p.add_argument("data", nargs="?", help="recordings table with a label column "
                                           "(FILE?column keys; default: the model "
                                           "directory's recording)")
    p.add_argument("--units", help="comma-separated output or state names (default: every "
                                   "float output and state, e.g. y,h)")
    p.add_argument("--zones", type=int, default=5, help="quantile zones per unit (5)")
    p.add_argument("--permutations", type=int, default=200, help="baseline permutations (200)")
    p.add_argument("--skip", type=float, default=0.0,
                   help="share of each recording's first samples left out (0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "litert"])
    p.add_argument("--precision", default="fp32")
    p.add_argument("--untrained", action="store_true",
                   help="probe a checkpoint's architecture at its initial weights (the "
                        "control: what the data alone puts in the zones)")
    p.add_argument("--out", type=Path, help="folder for probe.json and probe.png")
    p.set_defaults(func=_cmd_probe)


def _add_service(sub) -> None:
    p = sub.add_parser("service", help="install a `wavedge run` pipeline as a systemd service",
                       description="Write a systemd unit wavedge-NAME.service running `wavedge "
                                   "run MODEL_DIR` with the source, sink and options of "
                                   "/etc/wavedge/NAME.env (restarted on failure, stopped by "
                                   "SIGTERM, logged to the journal) and, for a serial device, a "
                                   "udev rule that starts it when the device appears; then "
                                   "enable and start it (docs/boards.md).")
    p.add_argument("action", choices=["install", "uninstall"])
    p.add_argument("name", help="the service's name: wavedge-NAME.service")
    p.add_argument("model_dir", type=Path, nargs="?", help="install: the model directory")
    p.add_argument("--source", action="append",
                   help="install: the source URL, as for `wavedge run` (repeat it for several "
                        "sensors: one stream each)")
    p.add_argument("--sink", action="append",
                   help="install: the sink URL (repeat it for several; a file sink appends "
                        "across restarts: append=1 is added unless the URL gives append=0)")
    _add_pipeline_options(p, defaults=False)  # given ones go into the unit, as for run
    p.add_argument("--user", help="run as this user (and the dialout group), not root")
    p.add_argument("--wavedge", help="the wavedge command the unit runs (default: this install's)")
    p.add_argument("--root", type=Path, default=Path("/"),
                   help="write under this root instead of / (an image being built: enabled "
                        "there by its multi-user.target.wants link, as systemctl --root does)")
    p.add_argument("--no-activate", action="store_true",
                   help="write the files only: not enabled, no systemctl or udevadm")
    p.add_argument("--print", action="store_true", help="print the files, write nothing")
    p.set_defaults(func=_cmd_service)


def _add_firmware(sub) -> None:
    p = sub.add_parser("firmware", help="copy the bridge's C library and Arduino sketch out",
                       description="Copy wb_frame.h/.c (the bridge protocol for a "
                                   "microcontroller: C99, no malloc) into OUT for a firmware "
                                   "project, and an Arduino sketch using them into "
                                   "OUT/wavedge_bridge/.")
    p.add_argument("--out", type=Path, required=True, help="folder to write into")
    p.add_argument("--force", action="store_true",
                   help="replace copied-out files that were changed (an edited sketch)")
    p.set_defaults(func=_cmd_firmware)


def _add_upgrade(sub) -> None:
    p = sub.add_parser("upgrade", help="rewrite a model directory's manifest as version 2",
                       description="Read a version-1 manifest.json (every file present verified; a "
                                   "board's pruned copy may lack some) and write it back as "
                                   "version 2; the graph files are unchanged.")
    p.add_argument("model_dir", type=Path)
    p.set_defaults(func=_cmd_upgrade)


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="validate a model directory and describe it",
                       description="Check the manifest (format, version, checksums) and print "
                                   "what the model takes and gives.")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("--ignore-missing", action="store_true",
                   help="a board's pruned copy: check the listed files that are here, and "
                        "mark the others (as sha256sum --ignore-missing)")
    p.set_defaults(func=_cmd_inspect)


class _Stdout:
    """``sys.stdout`` while a command runs: a write that fails names standard output (behind
    a full disk it had said "No space left on device", as if of a file the command wrote)."""

    def __init__(self, out) -> None:
        self._out = out

    def write(self, text: str) -> int:
        try:
            return self._out.write(text)
        except OSError as exc:
            raise _named(exc) from None

    def flush(self) -> None:
        try:
            self._out.flush()
        except OSError as exc:
            raise _named(exc) from None

    def __getattr__(self, name: str):
        return getattr(self._out, name)


STDOUT = "standard output"
CLOSED = ("standard output is closed, so what this command prints would be lost; redirect it "
          "(> FILE, or > /dev/null to drop it)")


class _Closed:
    """``sys.stdout`` when the command started with it closed (`>&-`): ``print`` had written
    nothing, and `inspect`, `bench` and `--version` exited 0 having said nothing."""

    def write(self, text: str) -> int:
        raise InputError(CLOSED)

    def flush(self) -> None:
        pass


def _named(exc: OSError) -> OSError:
    exc.filename = exc.filename or STDOUT
    return exc


def main(argv: list[str] | None = None) -> int:
    try:
        before = signal.signal(signal.SIGTERM, stopping.stop)
    except ValueError:  # not the main thread (an embedding caller's): left as it is
        before = None
    out = sys.stdout  # None: started with it closed (`>&-`), where print writes nothing
    sys.stdout = _Stdout(out) if out is not None else _Closed()
    try:
        args = build_parser().parse_args(argv)  # --help and --version write here too
        if out is None:  # refused before any work: a command's last line would be lost
            if not getattr(args, "output_optional", False):
                raise InputError(CLOSED)
            sys.stdout = None  # `wavedge run`'s output is its sink's: a stdout sink refuses
        code = args.func(args)  # `wavedge run` sets its own handler while it streams
        if sys.stdout is not None:
            sys.stdout.flush()  # a short output meets a full disk here, not at exit
        return code
    except WavedgeError as exc:
        print(f"wavedge: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("wavedge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped (`| head`)
        _drop_stdout()
        return 0
    except OSError as exc:  # a folder or file the system refused (firmware --out /proc/x)
        if exc.filename == STDOUT:
            _drop_stdout()
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"wavedge: error: {where}{reason(exc)}", file=sys.stderr)
        return 1
    finally:
        sys.stdout = out
        if before is not None:
            signal.signal(signal.SIGTERM, before)


def _drop_stdout() -> None:
    """What is left for standard output goes nowhere: Python's flush at exit would fail on it
    again, with a traceback and exit status 120."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
