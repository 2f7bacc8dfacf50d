"""torch -> ONNX export of wavedge models, checked against torch (export time only; imports
torch and onnx)."""

from wavedge.export.check import GraphError
from wavedge.export.model_dir import ExportOptions, export_model_dir
from wavedge.export.onnx_export import export_graph

__all__ = ["ExportOptions", "GraphError", "export_graph", "export_model_dir"]
