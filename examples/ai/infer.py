"""Batch inference: the AI example's job (examples/ai/README.md).

    python3 /in/code/infer.py [IN_DIR [OUT_DIR]]

IN_DIR (else $IN_DIR, else /in) holds what make_data.py wrote: model/config.json,
model/w1.npy, b1.npy, w2.npy, b2.npy and data/x.npy (float32 rows). OUT_DIR (else $OUT_DIR, else
/out) receives predictions.npy (one little-endian int32 class index per row) and summary.json
(rows, class counts, the SHA-256 of predictions.npy); stdout is the summary as one JSON line.
Bad input: one line on stderr naming it, exit code 2, nothing written.

Every executor must write the same bytes, or a 2-of-3 verdict splits. Float results depend on
the order a sum is taken in (BLAS kernels differ by CPU, by thread count, by version), so:
- the model is integer-valued (an int8-quantized MLP stored as float32 so BLAS multiplies it
  directly), the inputs are quantized to integers in [-127, 127] element by element, and the
  weights are bounded so that every partial sum of every dot product is an integer below 2**24:
  float32 holds those exactly, so ANY summation order gives the same bits (check_exact refuses a
  model that breaks the bound, rather than compute something that might differ);
- every other step is element-wise and exactly rounded in IEEE arithmetic (multiply, rint,
  clip, a power-of-two scale, floor, max), the same on every CPU and SIMD width;
- the output is integers (argmax, first index on a tie), so not even a float's formatting can
  differ; the stdout and summary.json hold nothing that varies (no times, no sizes of memory),
  and what a library might print to stderr while numpy loads is discarded (stderr is hashed too).
BLAS is pinned to one thread below (before numpy is imported) as well: not for the bits, which
the bound above already fixes, but so a job uses the one core it bids for.

Memory: the data is memory-mapped and read CHUNK_ROWS rows at a time. Beyond the interpreter
and numpy (~30 MB) it holds the weights (4 x features x hidden bytes: 32 MiB for the default
model), one chunk of rows (4 MiB) and its hidden layer (4 x CHUNK_ROWS x hidden: 32 MiB), and
predictions (4 bytes a row); the mapped data pages are clean page cache the kernel takes back
under the job's memory limit. Measured (README.md): it ran in 160 MiB; the README asks for 512.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"

import hashlib  # noqa: E402 - after the thread settings, which must precede numpy
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def _import_numpy_quietly():
    """numpy, imported with file descriptor 2 on /dev/null. OpenBLAS writes warnings to stderr as
    it loads on some CPUs and VMs ("could not determine the L2 cache size"); stderr is part of
    the result hash, so one executor's warning would split the verdict. A failed import still
    shows its traceback: Python prints it after fd 2 is back."""
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        import numpy
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return numpy


np = _import_numpy_quietly()

FORMAT = "distributeai-int8-mlp/1"
EXACT = 1 << 24  # float32 holds every integer of magnitude up to 2**24 exactly
QMAX = 127  # inputs and hidden activations are quantized to [-127, 127] and [0, 127]
CHUNK_ROWS = 1024


class BadInput(ValueError):
    """The inputs are not a model and dataset this job can run on."""


def load_model(model_dir: Path) -> dict:
    """The model's config and weights (float32 arrays), checked for shape and exactness."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"model/config.json: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise BadInput(f"model/config.json: format is not {FORMAT!r}")
    model: dict = {"config": config}
    for name in ("w1", "b1", "w2", "b2"):
        try:
            model[name] = np.load(model_dir / f"{name}.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BadInput(f"model/{name}.npy: {exc}") from None
        if model[name].dtype != np.float32:
            raise BadInput(f"model/{name}.npy: dtype {model[name].dtype}, not float32")
    w1, b1, w2, b2 = model["w1"], model["b1"], model["w2"], model["b2"]
    if w1.ndim != 2 or w2.ndim != 2 or b1.shape != (w1.shape[1],) or w2.shape[0] != w1.shape[1] \
            or b2.shape != (w2.shape[1],):
        raise BadInput(f"model: shapes w1 {w1.shape}, b1 {b1.shape}, w2 {w2.shape}, b2 {b2.shape} do not chain")
    for key in ("input_scale", "shift"):
        if not isinstance(config.get(key), (int, float)) or isinstance(config.get(key), bool):
            raise BadInput(f"model/config.json: {key} is not a number")
    if not 0 <= config["shift"] <= 24 or int(config["shift"]) != config["shift"]:
        raise BadInput("model/config.json: shift is not an integer in [0, 24]")
    if not 0 < config["input_scale"] < 1e30:
        raise BadInput("model/config.json: input_scale is not a positive number")
    check_exact(model)
    return model


def check_exact(model: dict) -> None:
    """BadInput unless every sum the model makes is an integer float32 holds exactly.

    A layer's dot products sum K products of an input in [-127, 127] and an integer weight, then
    add an integer bias: every partial sum is bounded by K * 127 * max|w| + max|b|, which must
    not pass 2**24.
    """
    for layer, w, b in (("layer 1", model["w1"], model["b1"]), ("layer 2", model["w2"], model["b2"])):
        for name, a in (("weights", w), ("biases", b)):
            if not np.array_equal(a, np.rint(a)):
                raise BadInput(f"model {layer}: {name} are not all integers (or not finite)")
        bound = w.shape[0] * QMAX * float(np.abs(w).max(initial=0)) + float(np.abs(b).max(initial=0))
        if bound > EXACT:
            raise BadInput(f"model {layer}: sums reach {bound:.0f}, past 2**24, where float32 stops being exact")


def quantize(x: np.ndarray, scale: float) -> np.ndarray:
    """float32 rows to integers in [-127, 127] (still float32), element by element; x is reused."""
    np.multiply(x, np.float32(scale), out=x)
    np.rint(x, out=x)
    return np.clip(x, -QMAX, QMAX, out=x)


def predict(xq: np.ndarray, model: dict) -> np.ndarray:
    """Class indices (int32) of quantized rows: relu, requantize (floor of a power-of-two
    scale, clipped to 127), then the argmax of the second layer's integer logits."""
    hidden = xq @ model["w1"]
    hidden += model["b1"]
    np.maximum(hidden, 0, out=hidden)
    hidden *= np.float32(2.0 ** -int(model["config"]["shift"]))
    np.floor(hidden, out=hidden)
    np.minimum(hidden, QMAX, out=hidden)
    logits = hidden @ model["w2"]
    logits += model["b2"]
    return np.argmax(logits, axis=1).astype("<i4")


def infer(in_dir: Path, chunk_rows: int = CHUNK_ROWS) -> tuple[np.ndarray, int]:
    """(predictions, classes) for in_dir's model and data, reading chunk_rows rows at a time."""
    model = load_model(in_dir / "model")
    try:
        data = np.load(in_dir / "data" / "x.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BadInput(f"data/x.npy: {exc}") from None
    features = model["w1"].shape[0]
    if data.dtype != np.float32 or data.ndim != 2 or data.shape[1] != features:
        raise BadInput(f"data/x.npy: {data.dtype} {data.shape}, not float32 rows of {features}")
    predictions = np.empty(data.shape[0], dtype="<i4")
    for start in range(0, data.shape[0], chunk_rows):
        x = np.array(data[start:start + chunk_rows], dtype=np.float32)  # a copy: quantized in place
        if not np.isfinite(x).all():
            row = start + int(np.argmin(np.isfinite(x).all(axis=1)))
            raise BadInput(f"data/x.npy: row {row} holds a value that is not finite")
        predictions[start:start + len(x)] = predict(quantize(x, model["config"]["input_scale"]), model)
    return predictions, model["w2"].shape[1]


def summarize(predictions: np.ndarray, classes: int, predictions_bytes: bytes) -> dict:
    """What summary.json holds: rows, the count of each class, predictions.npy's SHA-256."""
    return {
        "rows": int(predictions.shape[0]),
        "classes": classes,
        "counts": [int(c) for c in np.bincount(predictions, minlength=classes)],
        "predictions": "predictions.npy",
        "predictions_sha256": hashlib.sha256(predictions_bytes).hexdigest(),
    }


def npy_bytes(array: np.ndarray) -> bytes:
    """The .npy file of an array, as np.save writes it."""
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def main(argv: list[str]) -> int:
    in_dir = Path(argv[1] if len(argv) > 1 else os.environ.get("IN_DIR", "/in"))
    out_dir = Path(argv[2] if len(argv) > 2 else os.environ.get("OUT_DIR", "/out"))
    try:
        predictions, classes = infer(in_dir)
    except BadInput as exc:
        print(f"infer.py: {exc}", file=sys.stderr)
        return 2
    data = npy_bytes(predictions)
    summary = summarize(predictions, classes, data)
    (out_dir / "predictions.npy").write_bytes(data)
    (out_dir / "summary.json").write_text(json.dumps(summary, sort_keys=True, indent=1) + "\n")
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
