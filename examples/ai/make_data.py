"""Generate the AI example's inputs: a quantized 2-layer MLP and a dataset (examples/ai/README.md).

    python3 examples/ai/make_data.py DIR [--rows 50000] [--features 1024] [--hidden 8192]
                                         [--classes 16] [--seed 16]

Writes DIR/model/config.json, DIR/model/{w1,b1,w2,b2}.npy (float32 holding integers),
DIR/data/x.npy (rows x features float32, standard normal) and DIR/code/infer.py (a copy of the
job beside this file), replacing those files if present. The defaults make 205 MB of data and a
34 MB model (239 MB in all); --rows scales the data alone (4 x features bytes a row).

Deterministic: the same arguments and numpy version give the same bytes, hence the same CIDs
(numpy's Generator on PCG64, one stream for the model and one for the data, spawned from
--seed, so --rows leaves the model as it is). Memory stays bounded: the data is written CHUNK_ROWS
rows at a time (peak RSS 134 MB for the defaults).

The model is random, not trained: the example shows data moving and a verified result, not
accuracy. Its weights keep every sum below 2**24 so that inference is exact (infer.py).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from infer import EXACT, FORMAT, QMAX, check_exact  # noqa: E402 - the job's own rules

CHUNK_ROWS = 8192
INPUT_SCALE = 32.0  # a standard normal feature times 32, rounded: +-4 sigma reaches +-127
BIAS_MAX = 1 << 12  # biases are integers in [-4096, 4096]


def weight_max(fan_in: int) -> int:
    """The largest |weight| that keeps a layer's sums within 2**24 (at most 127)."""
    return min(QMAX, (EXACT - BIAS_MAX) // (fan_in * QMAX))


def make_model(rng: np.random.Generator, features: int, hidden: int, classes: int) -> dict:
    """The config and the weights of a random quantized MLP: features -> hidden -> classes."""
    w1max, w2max = weight_max(features), weight_max(hidden)
    if w2max < 1 or w1max < 1:
        raise SystemExit(f"make_data.py: a layer of {max(features, hidden)} inputs cannot stay exact in float32")
    # Scale the hidden layer so its typical value (about sqrt(features) * 32 * std(w1)) lands
    # near 64, inside the [0, 127] it is clipped to.
    w1_std = math.sqrt(((2 * w1max + 1) ** 2 - 1) / 12)
    shift = max(0, round(math.log2(math.sqrt(features) * INPUT_SCALE * w1_std / 64)))

    def integers(limit: int, shape: tuple[int, ...]) -> np.ndarray:
        return rng.integers(-limit, limit + 1, size=shape, dtype=np.int32).astype(np.float32)

    model = {
        "config": {"format": FORMAT, "features": features, "hidden": hidden, "classes": classes,
                   "input_scale": INPUT_SCALE, "shift": shift},
        "w1": integers(w1max, (features, hidden)),
        "b1": integers(BIAS_MAX, (hidden,)),
        "w2": integers(w2max, (hidden, classes)),
        "b2": integers(BIAS_MAX, (classes,)),
    }
    check_exact(model)
    return model


def write_data(rng: np.random.Generator, path: Path, rows: int, features: int) -> None:
    """rows x features standard normal float32 as a .npy file, written CHUNK_ROWS rows at a time."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (rows, features)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for start in range(0, rows, CHUNK_ROWS):
            n = min(CHUNK_ROWS, rows - start)
            f.write(rng.standard_normal((n, features), dtype=np.float32).tobytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="where model/, data/ and code/ are written")
    parser.add_argument("--rows", type=int, default=50_000, help="dataset rows (default 50000: 205 MB)")
    parser.add_argument("--features", type=int, default=1024, help="features a row (default 1024)")
    parser.add_argument("--hidden", type=int, default=8192, help="hidden units (default 8192)")
    parser.add_argument("--classes", type=int, default=16, help="classes (default 16)")
    parser.add_argument("--seed", type=int, default=16, help="random seed (default 16)")
    args = parser.parse_args(argv)
    for name in ("rows", "features", "hidden", "classes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.seed < 0:
        parser.error("--seed must be at least 0")

    model_rng, data_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(args.seed).spawn(2))
    model = make_model(model_rng, args.features, args.hidden, args.classes)
    for sub in ("model", "data", "code"):
        (args.dir / sub).mkdir(parents=True, exist_ok=True)
    (args.dir / "model" / "config.json").write_text(json.dumps(model["config"], sort_keys=True, indent=1) + "\n")
    for name in ("w1", "b1", "w2", "b2"):
        np.save(args.dir / "model" / f"{name}.npy", model[name], allow_pickle=False)
    write_data(data_rng, args.dir / "data" / "x.npy", args.rows, args.features)
    shutil.copyfile(HERE / "infer.py", args.dir / "code" / "infer.py")

    sizes = {sub: sum(f.stat().st_size for f in (args.dir / sub).iterdir()) for sub in ("model", "data", "code")}
    print(json.dumps({"dir": str(args.dir), "bytes": sizes, "total": sum(sizes.values()), **model["config"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
