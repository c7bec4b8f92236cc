"""Builds a random-weight model at a real model's size, in the ONNX folder layout Glance and
transformers.js load, so that benchmarks pay what the real model costs without downloading it.

    npm run make-model -- smolvlm-256m [--out DIR] [--seed N] [--longest-edge 512|1024|1536|2048]
    npm run make-model -- glm-ocr [--out DIR] [--seed N]

Each graph comes in fp32 and in the published variants (transformers.js's names): the fp16
decoder, q8 (`_quantized`), q4 and q4f16 (GLM-OCR's q4f16 set as onnx-community publishes it:
every graph with its .onnx_data, the decoder with num_logits_to_keep).

The folder (default ~/.cache/glance/models/NAME) is hundreds of MB to GB, so it is built, not
committed; the same seed gives the same weights. The answers are nonsense: these models are for
speed and memory, and for checking that Glance runs the real layouts, not for accuracy.
"""

import argparse
import importlib.util
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# The modules the builders and the tiny models' scripts they import need, with the Debian package
# of each (pip's names are the modules' own).
MODULES = {
    "numpy": "python3-numpy",
    "onnx": "python3-onnx",
    "regex": "python3-regex",
    "torch": "python3-torch",
}


def missing_modules():
    """The needed modules this interpreter cannot import, found without importing any (torch
    takes seconds), so that one message names them all instead of the first import failing."""
    return [m for m in MODULES if importlib.util.find_spec(m) is None]


def require_modules():
    missing = missing_modules()
    if not missing:
        return
    sudo = "" if os.geteuid() == 0 else "sudo "
    sys.exit(
        f"make-model needs the Python modules {', '.join(missing)}, which {sys.executable} cannot import. "
        f"On Debian or Ubuntu:\n\n"
        f"  {sudo}apt-get install {' '.join(MODULES[m] for m in missing)}\n\n"
        f"(in a virtual environment: pip install {' '.join(missing)})"
    )

MODELS = {
    "smolvlm-256m": "smolvlm",
    "glm-ocr": "glm_ocr",
}


def folder_listing(out_dir):
    """Every file under the folder with its size, largest last, as the build's summary."""
    rows = []
    for root, _, files in os.walk(out_dir):
        for name in files:
            path = os.path.join(root, name)
            rows.append((os.path.getsize(path), os.path.relpath(path, out_dir)))
    return sorted(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--out", help="the model folder to write (default ~/.cache/glance/models/MODEL)")
    parser.add_argument("--seed", type=int, help="weights seed (default: the model's own)")
    parser.add_argument("--longest-edge", type=int,
                        help="smolvlm-256m: the processor's size.longest_edge (default 2048, as published; 512 gives one tile per image)")
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch threads (default 1: the build is mostly serialisation, and leaves the other core free)")
    args = parser.parse_args()
    require_modules()
    import torch

    out_dir = os.path.abspath(os.path.expanduser(args.out or os.path.join("~/.cache/glance/models", args.model)))
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(args.threads)
    # The tracer warns of the q, k, v unpacking in the tiny models' attention: a loop over an axis
    # of fixed size 3, which no input changes.
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)

    started = time.time()
    builder = __import__(MODELS[args.model])
    options = {"seed": args.seed, "longest_edge": args.longest_edge}
    if args.longest_edge is not None and args.model != "smolvlm-256m":
        parser.error("--longest-edge is smolvlm-256m's")
    builder.build(out_dir, **{k: v for k, v in options.items() if v is not None})
    rows = folder_listing(out_dir)
    print(f"\n{args.model} in {out_dir}:")
    for size, name in rows:
        print(f"  {size / 1e6:10.1f} MB  {name}")
    print(f"  {sum(s for s, _ in rows) / 1e6:10.1f} MB  in all; built in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
