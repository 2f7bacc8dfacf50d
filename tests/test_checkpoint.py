"""Checkpoints: saved and reloaded exactly; every broken one is a one-line error naming it."""

from __future__ import annotations

import pickle

import pytest

from conftest import skip_module_without_torch

skip_module_without_torch()  # before the imports that need torch
import torch

from conftest import BUNDLED_CHECKPOINT, assert_one_line_error, run_cli
from wavedge.errors import CheckpointError
from wavedge.models import GRU, WaveRNN
from wavedge.models.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip_keeps_weights_config_and_meta(tmp_path):
    model = WaveRNN(input_size=2, output_size=3, channels=2, ring_size=5, mlp_hidden=4)
    path = save_checkpoint(tmp_path / "m.pt", model, {"task": "x", "metrics": {"a": 0.5}})
    ckpt = load_checkpoint(path)
    assert ckpt.model.config == model.config
    assert ckpt.meta == {"task": "x", "metrics": {"a": 0.5}}
    for (k, a), (_, b) in zip(model.state_dict().items(), ckpt.model.state_dict().items()):
        assert torch.equal(a, b), k


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_checkpoint(tmp_path):
    data = BUNDLED_CHECKPOINT.read_bytes()
    bad = tmp_path / "trunc.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(bad)


def test_foreign_pickle_is_not_executed(tmp_path):
    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps(pickle.Pickler))  # a global that weights_only refuses
    with pytest.raises(CheckpointError, match=str(bad)):
        load_checkpoint(bad)


def test_a_whole_module_or_a_text_file_is_one_line_saying_why(tmp_path):
    whole = tmp_path / "whole.pt"
    torch.save(WaveRNN(2, 3, 2, 5), whole)  # the model object, not its weights
    text = tmp_path / "notes.pt"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    assert_one_line_error(run_cli("export", whole, "--out", tmp_path / "o"),
                          "holds a wavedge.models.wave_rnn.WaveRNN, which loads only by "
                          "running code", "--weights")
    assert_one_line_error(run_cli("export", text, "--out", tmp_path / "o"),
                          "notes.pt: cannot be read (truncated, or not a file torch.save wrote)")


def test_plain_state_dict_is_not_a_wavedge_checkpoint(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(WaveRNN(2, 3, 2, 5).state_dict(), path)
    with pytest.raises(CheckpointError, match="not a wavedge checkpoint"):
        load_checkpoint(path)


def test_other_architecture_is_refused_when_one_is_expected(tmp_path):
    path = save_checkpoint(tmp_path / "gru.pt", GRU(2, 3, hidden_size=4), {})
    with pytest.raises(CheckpointError, match="architecture is 'gru', expected 'wave_rnn'"):
        load_checkpoint(path, expect_arch="wave_rnn")


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", WaveRNN(2, 3, 2, 5), {})
    blob = torch.load(path, weights_only=True)
    blob["state_dict"] = GRU(2, 3, hidden_size=4).state_dict()  # declared wave_rnn, GRU weights
    torch.save(blob, path)
    with pytest.raises(CheckpointError, match="do not match architecture 'wave_rnn'"):
        load_checkpoint(path)


def test_unknown_checkpoint_version(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", WaveRNN(2, 3, 2, 5), {})
    blob = torch.load(path, weights_only=True)
    blob["version"] = 99
    torch.save(blob, path)
    with pytest.raises(CheckpointError, match="version 99 is not supported"):
        load_checkpoint(path)


@pytest.mark.parametrize("case", ["missing", "truncated", "other_arch"])
def test_cli_export_reports_a_bad_checkpoint_in_one_line(tmp_path, case):
    path = tmp_path / "ckpt.pt"
    if case == "truncated":
        path.write_bytes(BUNDLED_CHECKPOINT.read_bytes()[:1000])
    elif case == "other_arch":
        save_checkpoint(path, GRU(6, 4, hidden_size=8), {"task": "basic_motions"})
    proc = run_cli("export", path, "--out", tmp_path / "out", "--arch", "wave_rnn")
    assert_one_line_error(proc, str(path))
    assert not (tmp_path / "out").exists()


def test_a_save_that_fails_midway_keeps_the_checkpoint_that_was_there(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", WaveRNN(2, 3, 2, 5), {"run": 1})

    def full_disk(obj, f):  # writes part of the file, then the disk is full
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"m.pt: cannot write the checkpoint \(No space "
                                              r"left on device\)"):
        save_checkpoint(path, WaveRNN(2, 3, 2, 5), {"run": 2})
    monkeypatch.undo()
    assert load_checkpoint(path).meta == {"run": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_training_to_a_place_it_cannot_write_fails_before_it_trains(tmp_path):
    """The check comes first: the save at the end of a run was a traceback, its training lost."""
    (tmp_path / "afile").write_text("")
    # --out naming the user's recordings overwrote them with a checkpoint
    (tmp_path / "data.csv").write_text("label,acc_x\nwalking,1.0\n")
    for out, why in ((tmp_path / "afile" / "m.pt", "a folder above it is a file"),
                     (tmp_path, "is a folder; give the checkpoint's file name"),
                     (tmp_path / "data.csv", "exists and is not a checkpoint")):
        proc = run_cli("train", "--arch", "irnn", "--epochs", "1", "--quiet", "--out", out)
        assert_one_line_error(proc, f"{out}:", why)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "data.csv"]
    assert (tmp_path / "data.csv").read_text() == "label,acc_x\nwalking,1.0\n"
