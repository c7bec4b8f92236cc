"""Writes a float16-interface variant of a model folder's ONNX graphs (float16_interface.py):
every float32 graph input and output becomes float16, with a Cast beside it, and the
computation stays float32.

    /usr/bin/python3 scripts/models/float16-io.py SRC_DIR DST_DIR

DST_DIR gets SRC_DIR's configs and onnx/{vision_encoder,embed_tokens,decoder_model_merged}_fp16.onnx,
which test/float16-io.test.ts runs Glance on without shipping a second model.
"""
import os
import shutil
import sys

import onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from float16_interface import to_float16_io  # noqa: E402

GRAPHS = ["vision_encoder", "embed_tokens", "decoder_model_merged"]


def main(src, dst):
    os.makedirs(os.path.join(dst, "onnx"), exist_ok=True)
    for name in os.listdir(src):
        if name.endswith(".json"):
            shutil.copy(os.path.join(src, name), dst)
    for name in GRAPHS:
        model = to_float16_io(onnx.load(os.path.join(src, "onnx", name + ".onnx")))
        onnx.checker.check_model(model)
        onnx.save(model, os.path.join(dst, "onnx", name + "_fp16.onnx"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
