"""Microcontroller check: run a full-integer ``.tflite`` in the TensorFlow Lite for
Microcontrollers interpreter (the ``tflite-micro`` package: the TFLM C++ kernels with a Python
wrapper, no board needed) on the same stream as LiteRT, and find the smallest tensor arena it
runs in, so a user knows whether the model fits a given microcontroller.

- ``arena_bytes``: the smallest arena (to 16 bytes) in which TFLM allocates and invokes the
  model, found by bisection. Measured on this 64-bit host; TFLM's bookkeeping is smaller with
  32-bit pointers, so a Cortex-M needs no more than this.
- agreement: every call's inputs (x and the state, quantised) go to both interpreters; the
  largest difference of any output or state element is counted in quantisation steps (LSB).
  Then TFLM runs the stream on its own, its state fed back, and its argmax is compared with
  LiteRT's at every step.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from wavedge.errors import ExportError
from wavedge.signature import state_input_name, state_output_name

ARENA_SEARCH_LIMIT = 4 << 20  # bytes; a model that needs more is no microcontroller model


def is_installed() -> bool:
    try:
        from tflite_micro import runtime  # noqa: F401
    except ImportError:
        return False
    return True


def _runs(runtime, content: bytes, arena: int, inputs: list[np.ndarray]) -> bool:
    try:
        interp = runtime.Interpreter.from_bytes(content, arena_size=arena)
        for i, value in enumerate(inputs):
            interp.set_input(value, i)
        interp.invoke()
    except (RuntimeError, ValueError):
        return False
    return True


def min_arena(content: bytes, inputs: list[np.ndarray]) -> int:
    """The smallest arena, in bytes (to 16), in which TFLM allocates the model and runs it on
    ``inputs`` (in the subgraph's input order)."""
    from tflite_micro import runtime

    from wavedge.runtime.backend_litert import quiet_stderr

    with quiet_stderr():  # TFLM prints every failed allocation
        if not _runs(runtime, content, ARENA_SEARCH_LIMIT, inputs):
            raise ExportError(f"TFLite Micro cannot run the model in {ARENA_SEARCH_LIMIT} bytes")
        lo, hi = 0, ARENA_SEARCH_LIMIT
        while hi - lo > 16:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if _runs(runtime, content, mid, inputs) else (mid, hi)
    return hi


def micro_check(path: Path, signature, stream: dict) -> dict:
    """Run the step graph ``path`` (full-integer) in TFLM and LiteRT over ``stream``
    (``{input name: [T, *shape]}``, raw units), tensors named by ``signature``; returns the
    manifest's ``micro`` record."""
    from tflite_micro import runtime

    from wavedge.runtime.backend_litert import codec, io_details, load_interpreter, tensor_spec

    content = Path(path).read_bytes()
    litert = load_interpreter(content)
    by_name_in, by_name_out = io_details(litert)
    specs = {name: tensor_spec(path, name, d) for name, d in (*by_name_in.items(),
                                                        *by_name_out.items())}
    if any(s.scale is None and s.dtype == "float32" for s in specs.values()):
        raise ExportError(f"{path}: TFLite Micro runs full-integer models; this one has float "
                          "inputs or outputs")
    # TFLM knows no signatures: tensors by position in the subgraph's input/output lists
    pos_in = {d["index"]: i for i, d in enumerate(litert.get_input_details())}
    pos_out = {d["index"]: i for i, d in enumerate(litert.get_output_details())}
    state_names = [st.name for st in signature.state]
    in_names = [i.name for i in signature.inputs]
    first_out = signature.outputs[0].name
    arena = min_arena(content, [np.zeros(d["shape"], d["dtype"])
                                for d in litert.get_input_details()])
    micro = runtime.Interpreter.from_bytes(content, arena_size=arena)
    q_x = {n: codec(specs[n]) for n in in_names}
    q_in = {n: codec(specs[state_input_name(n)]) for n in state_names}
    q_out = {n: codec(specs[state_output_name(n)]) for n in state_names}

    def call(interp, set_in, get_out, xs, state):
        for n in in_names:
            set_in(by_name_in[n], q_x[n].quantize(xs[n]))
        for n in state_names:
            set_in(by_name_in[state_input_name(n)], state[n])
        interp.invoke()
        return ({n: get_out(by_name_out[state_output_name(n)]) for n in state_names},
                get_out(by_name_out[first_out]))

    def lite_set(d, v):
        litert.set_tensor(d["index"], v)

    def micro_set(d, v):
        micro.set_input(v, pos_in[d["index"]])

    def lite_get(d):
        return litert.get_tensor(d["index"])

    def micro_get(d):
        return np.asarray(micro.get_output(pos_out[d["index"]])).reshape(d["shape"])

    def fed_back(state_out):  # requantised with the input's scale (identity when tied)
        return {n: q_in[n].quantize(q_out[n].dequantize(s)) for n, s in state_out.items()}

    zero = {st.name: q_in[st.name].quantize(st.reset_array(1)) for st in signature.state}
    lite_state, micro_state = dict(zero), dict(zero)
    worst_lsb, agree, micro_seconds = 0, 0, 0.0
    steps = len(stream[in_names[0]])
    for t in range(steps):
        x = {n: stream[n][t:t + 1] for n in in_names}
        l_state, l_y = call(litert, lite_set, lite_get, x, lite_state)
        m_state, m_y = call(micro, micro_set, micro_get, x, lite_state)  # the same inputs
        worst_lsb = max(worst_lsb, int(np.abs(l_y.astype(np.int32) - m_y).max()),
                        *(int(np.abs(l_state[n].astype(np.int32) - m_state[n]).max())
                          for n in state_names))
        started = time.perf_counter()
        own_state, own_y = call(micro, micro_set, micro_get, x, micro_state)  # its own state
        micro_seconds += time.perf_counter() - started
        agree += int(own_y.argmax() == l_y.argmax())
        lite_state, micro_state = fed_back(l_state), fed_back(own_state)
    import tflite_micro

    return {"interpreter": f"tflite-micro {tflite_micro.__version__}",
            "arena_bytes": arena, "model_bytes": len(content),
            "max_diff_lsb_same_inputs": worst_lsb,
            "argmax_agreement_own_state": agree / steps, "steps": steps,
            "call_us_host": round(micro_seconds / steps * 1e6, 1),
            "note": "arena measured on a 64-bit host (bisection to 16 bytes); same-inputs "
                    "difference in quantisation steps over every output and state element"}
