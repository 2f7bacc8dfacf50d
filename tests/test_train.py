"""Training recipes: reproducible by seed, learning, and writing the test accuracy with the
checkpoint (short runs on a slice of the data; the full recipes are `make train-all`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from conftest import assert_one_line_error, skip_module_without_torch

skip_module_without_torch()
import torch  # noqa: E402

from conftest import run_cli  # noqa: E402
from wavedge.models.checkpoint import load_checkpoint
from wavedge.models.data import Dataset, basic_motions, digits
from wavedge.models.train import default_recipe, train


def _small(data: Dataset, n: int) -> Dataset:
    return replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n],
                   x_test=data.x_test[:n], y_test=data.y_test[:n])


def test_datasets_ship_offline_with_the_documented_shapes():
    bm = basic_motions()
    assert bm.x_train.shape == (40, 100, 6) and bm.x_test.shape == (40, 100, 6)
    assert bm.labels == ("badminton", "running", "standing", "walking")
    dg = digits()
    assert dg.x_train.shape[1:] == (64, 1) and len(dg.x_train) + len(dg.x_test) == 1797
    assert set(np.unique(dg.y_test)) == set(range(10))


def test_same_seed_same_model_and_checkpoint_holds_accuracy(tmp_path):
    data = _small(basic_motions(), 16)
    recipe = replace(default_recipe("basic_motions", "wave_rnn"), epochs=2,
                     model={"channels": 4, "ring_size": 16})
    a, meta = train(recipe, out=tmp_path / "a.pt", progress=False, dataset=data)
    b, _ = train(recipe, progress=False, dataset=data)
    for (k, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), k
    ckpt = load_checkpoint(tmp_path / "a.pt")
    assert 0.0 <= ckpt.meta["metrics"]["test_accuracy"] <= 1.0
    assert ckpt.meta["metrics"] == meta["metrics"]
    assert ckpt.meta["recipe"]["seed"] == 0 and ckpt.meta["labels"][0] == "badminton"
    assert len(ckpt.meta["normalisation"]["mean"]) == 6


def test_training_learns_sequential_digits():
    data = _small(digits(), 400)
    recipe = replace(default_recipe("digits", "wave_rnn"), epochs=10, lr=5e-3,
                     model={"channels": 4, "ring_size": 16}, stream_segments=1)
    _, meta = train(recipe, progress=False, dataset=data)
    assert meta["metrics"]["test_accuracy"] > 0.4  # chance is 0.1; the full recipe gets 0.98


def test_cli_train_writes_a_checkpoint(tmp_path):
    out = tmp_path / "bm.pt"
    proc = run_cli("train", "--task", "basic_motions", "--arch", "irnn", "--epochs", "1",
                   "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout
    assert load_checkpoint(out, expect_arch="irnn").meta["recipe"]["epochs"] == 1


@pytest.mark.parametrize("flags, fragments", [
    (("--epochs", "0"), ["epochs must be at least 1, got 0"]),
    (("--quant-aware-epochs", "-2"), ["quant_aware_epochs must be at least 0, got -2"]),
    (("--threads", "0"), ["--threads must be a whole number, 1 to 256, got 0"]),
    (("--threads", "100000"), ["--threads must be a whole number, 1 to 256, got 100000"]),
    (("--config", '{"ring": 8}'), ["wave_rnn has no setting 'ring'; it takes input_size, "
                                   "output_size, channels, ring_size, mlp_hidden"]),
    (("--config", '{"channels": -1}'), ["wave_rnn: channels must be a whole number, 1 or more"]),
    # these two built, then failed mid-training in torch's words (or a bare IndexError)
    (("--config", '{"channels": 0}'), ["wave_rnn: channels must be a whole number, 1 or more"]),
    (("--config", '{"ring_size": 0}'), ["wave_rnn: ring_size must be a whole number"]),
    (("--arch", "gru", "--config", '{"hidden_size": 0}'), ["gru: hidden_size must be a whole"]),
    (("--arch", "irnn", "--config", '{"mlp_hidden": -4}'), ["irnn: mlp_hidden must be a whole "
                                                            "number, 0 or more, got -4"]),
])
def test_cli_train_settings_no_run_can_take_are_one_line(flags, fragments, tmp_path):
    """Refused before training (an epochs of 0 trained nothing and wrote a checkpoint; a
    config key the architecture lacks, or a bad thread count, was a traceback)."""
    out = tmp_path / "x.pt"
    assert_one_line_error(run_cli("train", *flags, "--out", out, "--quiet"), *fragments)
    assert not out.exists()


def test_cli_rejects_an_unknown_task():
    proc = run_cli("train", "--task", "mnist", "--out", "x.pt")
    assert_one_line_error(proc, "no recipe for task 'mnist' with arch 'wave_rnn'; known: ")


@pytest.mark.parametrize("device, fragments", [
    ("tpu", ["--device tpu: not a device; give cpu, cuda, cuda:N, mps or auto"]),
    ("cuda:x", ["--device cuda:x: not a device"]),
    ("meta", ["--device meta: wavedge trains on cpu, cuda or mps"]),
    pytest.param("cuda", ["--device cuda: this torch sees no CUDA GPU ("],
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")),
    pytest.param("cuda:7", ["--device cuda:7: "],
                 marks=pytest.mark.skipif(torch.cuda.device_count() > 7, reason="8 GPUs")),
])
def test_cli_train_on_a_device_this_machine_lacks_is_one_line(device, fragments, tmp_path):
    """Refused before the data is read, nothing written (the flag did not exist: a
    workstation's GPU could not be trained on)."""
    out = tmp_path / "x.pt"
    assert_one_line_error(run_cli("train", "--device", device, "--epochs", "1", "--out", out,
                                  "--quiet"), *fragments)
    assert not out.exists()


def test_the_checkpoint_says_where_it_was_trained(tmp_path):
    out = tmp_path / "bm.pt"
    proc = run_cli("train", "--arch", "irnn", "--epochs", "1", "--device", "auto",
                   "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    where = load_checkpoint(out).meta["device"]
    assert where == ("cpu" if not torch.cuda.is_available() else
                     f"cuda:0 ({torch.cuda.get_device_name(0)})")
    assert f"s on {where}, " in proc.stdout


def _weights_apart(a, b) -> float:
    """The largest difference between two models' weights, relative to the largest weight."""
    return max(float((pa - pb).abs().max() / pa.abs().max().clamp(min=1e-12))
               for pa, pb in zip(a.state_dict().values(), b.state_dict().values()))


def test_train_seconds_count_the_training_alone(monkeypatch):
    """The checkpoint's train_seconds (and make bench-train's seconds per epoch) had counted
    the accuracy measured after training: on sequential digits a never-reset stream of
    144,000 one-sample steps, most of a GPU epoch's time on an H200. A fake clock: the fit
    takes 7 s, the never-reset accuracy 1000 s."""
    import types

    import wavedge.models.train as trainer

    clock = [0.0]

    def taking(seconds, real):
        def f(*args, **kwargs):
            clock[0] += seconds
            return real(*args, **kwargs)
        return f

    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(trainer, "_fit", taking(7.0, trainer._fit))
    monkeypatch.setattr(trainer, "stream_accuracy", taking(1000.0, trainer.stream_accuracy))
    recipe = replace(default_recipe("basic_motions", "irnn"), epochs=1, quant_aware_epochs=0,
                     model={"hidden_size": 8})
    _, meta = train(recipe, progress=False, dataset=_small(basic_motions(), 8))
    assert meta["metrics"]["train_seconds"] == 7.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("task, arch, overrides, apart", [
    ("basic_motions", "wave_rnn", {"epochs": 3, "quant_aware_epochs": 2,
                                   "model": {"channels": 4, "ring_size": 16}}, 1e-3),
    ("basic_motions", "gru", {"epochs": 3, "model": {"hidden_size": 16}}, 1e-3),
    # predictive coding relaxes its beliefs by L-BFGS, whose line search turns rounding into
    # other steps: on an H200's host, one CPU thread against 16 left the weights 0.20 apart
    # after this epoch, as far as the GPU from the CPU (the GPU against itself: 0.0)
    ("digit_rows", "mpl", {"epochs": 1, "model": {"hidden_size": 16}}, None),
])
def test_on_a_gpu_training_gives_the_cpus_model_up_to_rounding(task, arch, overrides, apart,
                                                                tmp_path):
    """The same batches, noise and initial weights as on the CPU (drawn there), float32
    arithmetic on both: the weights after training agree closely (where the learning rule
    does not amplify rounding), the checkpoint holds CPU tensors that load anywhere, and it
    exports and checks like the CPU's."""
    from wavedge.models.data import load_dataset

    data = _small(load_dataset(task), 64)
    recipe = replace(default_recipe(task, arch), **overrides)
    cpu, cpu_meta = train(recipe, progress=False, dataset=data)
    gpu, meta = train(recipe, out=tmp_path / "g.pt", progress=False, dataset=data,
                      device="cuda")
    assert meta["device"].startswith("cuda:0 (") and cpu_meta["device"] == "cpu"
    assert all(t.device.type == "cpu" for t in gpu.state_dict().values())
    assert apart is None or _weights_apart(cpu, gpu) < apart, _weights_apart(cpu, gpu)
    assert abs(meta["metrics"]["test_accuracy"] - cpu_meta["metrics"]["test_accuracy"]) <= 0.05
    loaded = load_checkpoint(tmp_path / "g.pt", expect_arch=arch)
    assert all(t.device.type == "cpu" for t in loaded.model.state_dict().values())
    proc = run_cli("export", tmp_path / "g.pt", "--out", tmp_path / "m")
    assert proc.returncode == 0, proc.stderr


def test_train_all_refuses_a_recipe_it_does_not_have(tmp_path, capsys):
    """`--only basic_motion/gru` (a typo) had trained nothing and printed an empty table,
    exit 0."""
    from wavedge.models import train_all

    with pytest.raises(SystemExit) as stop:
        train_all.main(["--out", str(tmp_path), "--only", "basic_motion/gru"])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "--only basic_motion/gru: no such recipe; known: basic_motions/gru" in err
    assert "grid_walks/tem_t" in err and "walks/" not in err.replace("grid_walks/", "")
    assert not any(tmp_path.iterdir())


def test_bench_train_times_each_device_and_refuses_one_it_lacks(tmp_path):
    """`make bench-train`: seconds per epoch per size and device, written after each repeat."""
    import json
    import subprocess
    import sys

    from conftest import ROOT, user_env

    script = [sys.executable, str(ROOT / "scripts" / "bench_train.py")]
    proc = subprocess.run([*script, "--repeats", "1", "--size", "basic_motions 16x64", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env=user_env())
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "train.json").read_text())
    (run,) = report["results"]["basic_motions 16x64"]["cpu"]
    assert run["seconds_per_epoch"] > 0 and 0 <= run["test_accuracy"] <= 1
    assert report["device_names"] == {"cpu": "cpu"} and report["repeats"] == 1
    assert (tmp_path / "train.md").read_text().splitlines()[2].startswith(
        "| basic_motions 16x64 | ")
    if not torch.cuda.is_available():
        lacking = subprocess.run([*script, "--device", "cuda"], capture_output=True, text=True,
                                 timeout=120, env=user_env())
        assert lacking.returncode == 1 and lacking.stderr.startswith(
            "bench_train: --device cuda: this torch sees no CUDA GPU"), lacking.stderr
