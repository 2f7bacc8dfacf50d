# wavedge: the front door. `make demo` runs the main job on the bundled model, `make test` the
# tests; each creates the virtual environment it needs on first use.

PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BUNDLED := wavedge/bundled/wave_basic_motions
BUNDLED_MPL := wavedge/bundled/mpl_digit_rows
OUT ?= out

TFLITE_VENV ?= .venv-tflite
TFLITE_STAMP := $(TFLITE_VENV)/.installed-stamp
RUNTIME_VENV ?= .venv-runtime
RUNTIME_STAMP := $(RUNTIME_VENV)/.installed-stamp

.PHONY: venv broker demo test paper-mpl paper-mpl-quick test-runtime test-repeat bench bench-sequence bench-bridge train-all bundle bundle-mpl test-arm64 test-tflite-runtime bench-scale bench-train bench-startup bench-sources bench-reply fuzz soak clean paper-wave-rnn paper-wave-rnn-quick paper-attention paper-attention-quick paper-tem paper-tem-quick tem-own-walks probe

# The venv: runtime (numpy, onnxruntime, pyserial) + LiteRT interpreter + export extra
# (torch==2.13.0 CPU, onnx, scikit-learn, sktime) + TFLite Micro's interpreter + matplotlib
# (bench plot) + pytest, the package installed editable.
# Rebuilt when pyproject, setup.py or the C fast path (wavedge/runtime/_fast.c, compiled by the
# install where a C compiler is present) changes.
$(STAMP): pyproject.toml setup.py wavedge/runtime/_fast.c
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[export,litert,micro,bench,mqtt,test]'
	touch $(STAMP)

# A second venv with litert-torch for TFLite export (about 2 GB; only `make bundle` needs it).
$(TFLITE_STAMP): pyproject.toml setup.py wavedge/runtime/_fast.c
	$(PY) -m venv $(TFLITE_VENV)
	$(TFLITE_VENV)/bin/python -m pip install -q --upgrade pip
	$(TFLITE_VENV)/bin/python -m pip install -q -e '.[export,litert,tflite,bench,test]'
	touch $(TFLITE_STAMP)

# A board's install: the runtime and the LiteRT interpreter, no torch, no export extra.
$(RUNTIME_STAMP): pyproject.toml setup.py wavedge/runtime/_fast.c
	$(PY) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/python -m pip install -q --upgrade pip
	$(RUNTIME_VENV)/bin/python -m pip install -q -e '.[litert,mqtt,test]'
	touch $(RUNTIME_STAMP)

venv: $(STAMP)

# Main job on the bundled default: check the bundled model directory, then stream its recording
# of the 40 BasicMotions test recordings (4,000 samples, never reset) through the wave-encoder on
# ONNX Runtime and on LiteRT, printing the prediction at the end of each recording against the
# true activity, and the latency summary; then sends the results as RESULT frames over a
# pseudo-terminal to the stand-in microcontroller (C, built here), which prints what it got.
demo: $(STAMP)
	$(BIN)/wavedge inspect $(BUNDLED)
	$(BIN)/wavedge run $(BUNDLED) --source 'replay:$(BUNDLED)/recording.csv?rate=max' \
		--sink 'stdout:?every=100' --backend onnxruntime
	$(BIN)/wavedge run $(BUNDLED) --source 'replay:$(BUNDLED)/recording.csv?rate=max' \
		--sink null: --backend litert
	$(BIN)/python -m wavedge.firmware_bridge.standin $(BUNDLED) --limit 4000

# Benchmark the bundled model: every backend x precision x mode beside the bare backend call,
# the backend's floor, torch and numpy step by step, sliding-window re-inference and 8 streams
# (round-robin, one group, the raw batch-8 call; about two minutes); table on screen,
# bench.json and bench.png in $(OUT)/bench. See docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/wavedge bench $(BUNDLED) --checkpoint $(BUNDLED).pt --repeats 5 --samples 3000 \
		--rate 100 --rate 1000 --rate 16000 --streams 8 --out $(OUT)/bench

# mosquitto, the broker the MQTT tests start on the loopback address, from Debian where it is
# missing (the tests skip, saying so, where it cannot be installed).
broker:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || \
		apt-get install -y -q mosquitto >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q mosquitto >/dev/null 2>&1) || \
		echo "wavedge: mosquitto could not be installed; the MQTT tests will skip"

# The default test run (no hardware, no network beyond the loopback address, about ten minutes
# on 2 cores).
test: $(STAMP) broker
	$(BIN)/python -m pytest -q

# The torch-free tier: every test that does not need torch, in a venv with the runtime only
# (as on a board); the rest skip, each saying what it needs. About a minute after the venv.
test-runtime: $(RUNTIME_STAMP) broker
	$(RUNTIME_VENV)/bin/python -m pytest -q

# The tests that start processes, signal them or talk over pseudo-terminals and sockets,
# REPEAT times in a row (50): a flaky one shows here, not in a random CI run. Not in `make test`.
REPEAT ?= 50
test-repeat: $(STAMP)
	$(BIN)/python -m pytest -q -x --count=$(REPEAT) -p no:cacheprovider \
		tests/test_bridge_link.py tests/test_unattended.py tests/test_run_many.py \
		tests/test_runtime_io.py -k "proxy or signal or sigkill or ctrl_c or piped or pipe or serial or pseudo or link or replug or hung or stream"

# Training time per iteration against sequence length (100 to 1,000 steps), the recurrent
# loop over the drive split per step against the drive[:, i] indexing it replaced (a minute).
bench-sequence: $(STAMP)
	$(BIN)/python scripts/bench_sequence.py --out $(OUT)/bench/sequence.json

# The wave-encoder against its paper (Keller et al., ICLR 2024): the adding task (T=100) and the
# copy task (paper T=10 and 30) as the authors' code defines them, the Wave-RNN against the
# iRNN, 3 seeds (about an hour here); results.json, results.md and curves.png in
# $(OUT)/paper-wave-rnn. The numbers in docs/paper-wave-rnn.md. The quick version: one seed,
# shorter budgets (about 5 minutes).
paper-wave-rnn: $(STAMP)
	$(BIN)/python -m wavedge.models.paper_wave_rnn --profile full --out $(OUT)/paper-wave-rnn

paper-wave-rnn-quick: $(STAMP)
	$(BIN)/python -m wavedge.models.paper_wave_rnn --profile quick --out $(OUT)/paper-wave-rnn-quick

# Meta predictive learning against its paper (Li, Qiu & Huang, PRE 2024): the toy language's
# data-load sweep (alpha 0.01 to 1) by predictive coding (ours and the authors' settings) and
# BPTT, sequential digits (PC, BPTT, a deterministic RNN), `wavedge train`'s recipe by PC and
# BPTT, and the bundled model on the board (mean network against stochastic passes, int8 with
# and without the variance path in float), 5 seeds (about 45 minutes); toy.json, toy.png,
# digits.json, recipe.json, board.json and the weight histograms in $(OUT)/paper-mpl. The
# numbers in docs/paper-mpl.md. The quick version: one seed (about 10 minutes).
paper-mpl: $(STAMP)
	$(BIN)/python -m wavedge.models.paper_mpl --profile full --out $(OUT)/paper-mpl

paper-mpl-quick: $(STAMP)
	$(BIN)/python -m wavedge.models.paper_mpl --profile quick --out $(OUT)/paper-mpl-quick

# Residual attention streams against their paper (Burns, Fukai & Earls 2024): on Reddy's
# in-context classification task, the training steps a two-layer transformer takes to learn in
# context, with and without the value stream, the same seeds, data and initial weights for
# both, 5 seeds, up to 20,000 steps a run (about an hour on one core; --seeds and --merge run
# them side by side); results.json and icl.png in $(OUT)/paper-attention. The numbers in
# docs/attention.md. The quick version: 2 seeds, up to 8,000 steps (11 min 40 s here).
paper-attention: $(STAMP)
	$(BIN)/python -m wavedge.models.paper_attention --profile full --out $(OUT)/paper-attention

paper-attention-quick: $(STAMP)
	$(BIN)/python -m wavedge.models.paper_attention --profile quick --out $(OUT)/paper-attention-quick

# TEM-t against its paper (Whittington, Warren & Behrens 2022): zero-shot accuracy on 5x5 grid
# worlds against gradient updates, TEM-t and the same model without path integration, the
# same seeds and walks, then a 20,000-step stream never reset; 5 seeds of the default
# recipe's 1,500 updates (36 minutes on one core; --seeds and --merge run them side by side);
# results.json and zero-shot.png in $(OUT)/paper-tem. The numbers in docs/tem.md. The quick
# version: 2 seeds (about 15 minutes).
paper-tem: $(STAMP)
	$(BIN)/python -m wavedge.models.paper_tem --profile full --out $(OUT)/paper-tem

paper-tem-quick: $(STAMP)
	$(BIN)/python -m wavedge.models.paper_tem --profile quick --out $(OUT)/paper-tem-quick

# TEM-t trained on logged walks as a user's own data (`wavedge train --arch tem_t --data`):
# logs of 4, 10 and 40 walks in fresh 5x5 grid worlds, with and without a place column,
# without the recipe's relabelling, and with a tenth of the logged moves failed; each model
# scored on walks in environments no log holds (about 36 minutes);
# $(OUT)/tem-own-walks/results.json (docs/tem.md#your-own-walks).
tem-own-walks: $(STAMP)
	$(BIN)/python scripts/tem_own_walks.py --walks 4,10,40 --out $(OUT)/tem-own-walks

# The intra-neuronal attention probe on the bundled wave-encoder (docs/probe.md): its exported
# graph over its recording, the same from the checkpoint after each recording's first half,
# and the untrained control (under a minute); probe.json and probe.png in $(OUT)/probe/*.
probe: $(STAMP)
	$(BIN)/wavedge probe $(BUNDLED) --out $(OUT)/probe/trained
	$(BIN)/wavedge probe $(BUNDLED).pt $(BUNDLED)/recording.csv --skip 0.5 --out $(OUT)/probe/trained-second-half
	$(BIN)/wavedge probe $(BUNDLED).pt $(BUNDLED)/recording.csv --untrained --out $(OUT)/probe/untrained

# The step and chunk graphs' cost against model size (wave-encoders 16x64 to 64x256, random
# weights), ONNX Runtime and LiteRT, interleaved; $(OUT)/bench-scale (docs/benchmarks.md).
bench-scale: $(STAMP) $(TFLITE_STAMP)
	$(TFLITE_VENV)/bin/python scripts/bench_scale.py --repeats 7 --out $(OUT)/bench-scale

# Training time per epoch on each device, interleaved: DEVICES="cpu cuda" on a workstation with
# a GPU (the CUDA build of torch); $(OUT)/bench-train (docs/benchmarks.md).
DEVICES ?= cpu
bench-train: $(STAMP)
	$(BIN)/python scripts/bench_train.py $(foreach d,$(DEVICES),--device $(d)) --repeats 3 \
		--out $(OUT)/bench-train

# Start-up of `wavedge run --limit 1` in the torch-free venv (a board's install), both backends
# interleaved, wall time and peak RSS (a few seconds); $(OUT)/bench/startup.json.
bench-startup: $(RUNTIME_STAMP)
	$(PY) scripts/bench_startup.py --python $(RUNTIME_VENV)/bin/python --out $(OUT)/bench/startup.json

# Several sensors through `wavedge run`'s loop: a group call per tick against the streams in
# turn, and the tick's wait for every source (about 75 seconds); $(OUT)/bench/sources.json.
bench-sources: $(STAMP)
	$(BIN)/python scripts/bench_sources.py --out $(OUT)/bench/sources.json

# A board's round trip: a sample sent, its prediction back (`?reply=last`), over HTTP and UDP
# against HTTP's own round trip, interleaved (about 10 seconds); $(OUT)/bench/reply.json.
bench-reply: $(STAMP)
	$(BIN)/python scripts/bench_reply.py --out $(OUT)/bench/reply.json

# Throughput of the Python frame codec against a 921600-baud link (a few seconds).
bench-bridge: $(STAMP)
	$(BIN)/python -m wavedge.firmware_bridge.bench --out $(OUT)/bench/bridge.json

# Train every model on the bundled datasets with the default recipes (about 8 minutes: 7 min 39 s
# here on 2026-12-03);
# checkpoints and results.json land in $(OUT)/train. The numbers in docs/wave-encoder.md.
train-all: $(STAMP)
	$(BIN)/python -m wavedge.models.train_all --out $(OUT)/train

# Retrain the bundled wave-encoder and re-export its model directory (ONNX and TFLite, fp32 and
# int8, each checked against torch; graphs of 8 streams per call for a group) with the test
# recording.
bundle: $(STAMP) $(TFLITE_STAMP)
	$(BIN)/wavedge train --task basic_motions --arch wave_rnn --out $(BUNDLED).pt
	$(TFLITE_VENV)/bin/wavedge export $(BUNDLED).pt --out $(BUNDLED) --recording \
		--format onnx,tflite --precision fp32,int8 --batch 8

# Retrain the bundled spike-and-slab RNN (meta predictive learning, by predictive coding, about
# a minute) on the digits read a row at a time, and re-export its model directory (ONNX and
# TFLite, fp32 and int8, chunks of 8: one digit) with the test recording (docs/paper-mpl.md).
bundle-mpl: $(STAMP) $(TFLITE_STAMP)
	$(BIN)/wavedge train --task digit_rows --arch mpl --quiet --out $(BUNDLED_MPL).pt
	$(TFLITE_VENV)/bin/wavedge export $(BUNDLED_MPL).pt --out $(BUNDLED_MPL) --recording \
		--chunk 8 --format onnx,tflite --precision fp32,int8

# The torch-free tier with tflite-runtime 2.14 and NumPy < 2 instead of ai-edge-litert (the
# combination a 32-bit Raspberry Pi OS board runs), in its own venv (about 2.5 minutes: 2 min 41 s
# here on 2026-12-03, the venv already built).
TFLITE_RUNTIME_VENV ?= .venv-tflite-runtime
test-tflite-runtime: broker
	$(PY) -m venv $(TFLITE_RUNTIME_VENV)
	$(TFLITE_RUNTIME_VENV)/bin/python -m pip install -q --upgrade pip
	$(TFLITE_RUNTIME_VENV)/bin/python -m pip install -q -e '.[tflite-runtime,mqtt,test]'
	$(TFLITE_RUNTIME_VENV)/bin/python -c "import numpy, tflite_runtime; assert numpy.__version__ < '2'; print('tflite-runtime', tflite_runtime.__version__, 'numpy', numpy.__version__)"
	$(TFLITE_RUNTIME_VENV)/bin/python -m pytest -q

# wavedge on an emulated Raspberry Pi OS (64-bit) userland: a Debian bookworm arm64 root under
# qemu-user (binfmt_misc; needs root), the PyPI aarch64 wheels; both bundled models run on both
# backends, fp32 and int8, compared with this host, and the torch-free bridge, manifest and
# runtime tests (docs/boards.md). About 11 minutes from scratch here (measured 11 min 9 s, wavedge
# built from source in the root), 5-7.5 with the root cached in $(OUT)/arm64/root
# (10 min 18 s on 2026-12-04, more tests under emulation). Emulated: no
# timing from it is a performance number.
test-arm64: $(STAMP)
	OUT=$(OUT) HOST_PY=$(abspath $(BIN))/python scripts/arm64/test_arm64.sh

# Remove the venv and everything generated.
clean:
	rm -rf $(VENV) $(TFLITE_VENV) $(RUNTIME_VENV) $(TFLITE_RUNTIME_VENV) .pytest_cache *.egg-info
	@# an interrupted test-arm64 may leave the host's /dev and /sys bound inside its root
	for m in proc/cpuinfo proc sys dev; do \
		if mountpoint -q $(OUT)/arm64/root/$$m 2>/dev/null; then umount -R -l $(OUT)/arm64/root/$$m; fi; \
	done
	rm -rf --one-file-system $(OUT)

# Stream SOAK_SAMPLES generated samples through every backend x precision of the bundled
# model, one push at a time (10 million take about 7 minutes on ONNX Runtime and 12 on LiteRT
# here, fp32 and int8 interleaved);
# RSS curve, latency percentiles per window and int8 agreement with fp32 in $(OUT)/soak.
# Not part of `make test`.
SOAK_SAMPLES ?= 10000000
soak: $(STAMP)
	$(BIN)/python -m wavedge.runtime.soak $(BUNDLED) --samples $(SOAK_SAMPLES) --out $(OUT)/soak

# Fuzz the C frame decoder with libFuzzer under ASan/UBSan for FUZZ_SECONDS (installs clang
# from Debian if it is missing), then the Python readers (line parser, URLs, manifest) with
# hypothesis at FUZZ_EXAMPLES examples per property. Not part of `make test` (which runs the
# same properties at 300 examples).
FUZZ_SECONDS ?= 60
FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP)
	WAVEDGE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q tests/test_fuzz.py
	command -v clang >/dev/null || apt-get install -y -q clang
	mkdir -p $(OUT)/fuzz/corpus
	clang -std=c99 -g -O1 -fsanitize=fuzzer,address,undefined -I wavedge/firmware_bridge/c \
		wavedge/firmware_bridge/c/wb_frame.c tests/c/fuzz_wb_decoder.c -o $(OUT)/fuzz/wb_decoder
	$(OUT)/fuzz/wb_decoder -max_total_time=$(FUZZ_SECONDS) -max_len=4096 $(OUT)/fuzz/corpus
