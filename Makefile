# wavedge: the front door. `make demo` runs the main job on the bundled model, `make test` the
# tests; each creates the virtual environment it needs on first use.

PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BUNDLED := wavedge/bundled/wave_basic_motions
OUT ?= out

.PHONY: venv demo test train-all bundle clean

# The venv: runtime (numpy, onnxruntime, pyserial) + export extra (torch==2.13.0 CPU, onnx,
# scikit-learn, sktime) + pytest, the package installed editable. Rebuilt when pyproject changes.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[export,test]'
	touch $(STAMP)

venv: $(STAMP)

# Main job on the bundled default: validate the bundled model directory, then export its
# checkpoint afresh and check both ONNX graphs against torch over 2048 held-out steps.
demo: $(STAMP)
	$(BIN)/wavedge inspect $(BUNDLED)
	$(BIN)/wavedge export $(BUNDLED).pt --out $(OUT)/demo-export

# The default test run (no hardware, no network, a few minutes on 2 cores).
test: $(STAMP)
	$(BIN)/python -m pytest -q

# Train every model on both bundled datasets with the default recipes (about 10 minutes);
# checkpoints and results.json land in $(OUT)/train. The numbers in docs/wave-encoder.md.
train-all: $(STAMP)
	$(BIN)/python -m wavedge.models.train_all --out $(OUT)/train

# Retrain the bundled wave-encoder and re-export its model directory with the test recording.
bundle: $(STAMP)
	$(BIN)/wavedge train --task basic_motions --arch wave_rnn --out $(BUNDLED).pt
	$(BIN)/wavedge export $(BUNDLED).pt --out $(BUNDLED) --recording

# Remove the venv and everything generated.
clean:
	rm -rf $(VENV) $(OUT) .pytest_cache *.egg-info
