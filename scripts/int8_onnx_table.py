"""The int8 ONNX recipe table of docs/quantisation.md, re-measured on a checkpoint.

    .venv/bin/python scripts/int8_onnx_table.py [CKPT] [--out DIR]

Each row exports the checkpoint with fp32 and int8 ONNX under one ``QuantOptions`` (forced, so
a recipe that misses the accuracy gate is still measured) and prints the int8 files' size,
test accuracy and agreement with torch from the manifest the export writes. About 20 s a row.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from wavedge.export import ExportOptions, export_model_dir
from wavedge.export.quantize import QuantOptions
from wavedge.models.checkpoint import load_checkpoint

RECIPES = {
    "static, a16, conv per channel (the default)": QuantOptions(),
    'static, a16, per_channel="all"': QuantOptions(per_channel="all"),
    "static, a8 (uint8), QDQ, reduce_range": QuantOptions(activation_bits=8, reduce_range=True),
    "static, a8, QOperator, reduce_range, per channel": QuantOptions(
        activation_bits=8, reduce_range=True, quant_format="qoperator", per_channel="all"),
    "dynamic, matmuls, u8 weights": QuantOptions(method="dynamic"),
    "dynamic, matmuls, s8 weights": QuantOptions(method="dynamic", weight_type="qint8"),
    "dynamic, matmuls, s8 weights, reduce_range": QuantOptions(
        method="dynamic", weight_type="qint8", reduce_range=True),
    "dynamic, matmuls and the ring conv": QuantOptions(
        method="dynamic", op_types=("Gemm", "MatMul", "Conv")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default="wavedge/bundled/wave_basic_motions.pt")
    parser.add_argument("--out", type=Path, help="keep the model directories here")
    args = parser.parse_args()
    ckpt = load_checkpoint(args.checkpoint)
    out = args.out or Path(tempfile.mkdtemp(prefix="int8-table-"))
    print("| int8 recipe | graph | bytes | vs fp32 | test acc. | error vs torch | agreement |")
    print("|---|---|---|---|---|---|---|")
    for i, (name, quant) in enumerate(RECIPES.items()):
        quant = QuantOptions(**{**quant.__dict__, "force": True})
        manifest = export_model_dir(ckpt, out / f"recipe{i}",
                                    ExportOptions(precisions=("fp32", "int8"), quant=quant))
        for f in json.loads(manifest.read_text())["files"]:
            if f["precision"] == "int8":
                e = f["error_vs_torch"]
                print(f"| {name} | {f['graph']} | {f['size_bytes']:,} | {f['size_vs_fp32']} | "
                      f"{f['accuracy']['test']:.3f} | {e['error']:.3g} | "
                      f"{e['argmax_agreement']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
