"""The board side: load a model directory, stream samples through it, one at a time.

Needs numpy and one inference runtime (onnxruntime or ai-edge-litert); never torch.

    from wavedge.runtime import load_model
    model = load_model("wavedge/bundled/wave_basic_motions")      # manifest checked first
    stream = model.stream()                                         # own state, shared graphs
    result = stream.push([0.1, -9.8, 0.3, 0.0, 0.01, 0.02])         # raw sensor values
    result.label, result.score
"""

from wavedge.runtime.backends import BackendError, BackendOptions, available
from wavedge.runtime.events import Events
from wavedge.runtime.group import GroupResults, Member, StreamGroup
from wavedge.runtime.model import Model, load_model
from wavedge.runtime.sources import Sample, SourceError
from wavedge.runtime.stream import POLICIES, Result, Results, Stream
from wavedge.runtime.urls import open_sink, open_source, register_sink, register_source

__all__ = ["POLICIES", "BackendError", "BackendOptions", "Events", "GroupResults", "Member", "Model",
           "Result", "Results", "Sample", "SourceError", "Stream", "StreamGroup", "available",
           "load_model", "open_sink", "open_source", "register_sink", "register_source"]
