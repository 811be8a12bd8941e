"""Data sets: the built-in scikit-learn 8x8 digits (no download), and your own (:func:`load_data` for an ``.npz``
file, :func:`dataset_from_arrays`, :func:`dataset_from_torch`), all split once with a fixed seed.

**The split** (every data set, the digits included): the N samples are permuted with
``numpy.random.default_rng(SEED).permutation(N)`` (``SEED = 0``); the first ``round(N * TEST_FRACTION)``
(25 %) of that order are the **test** set (evaluation: float / compressed / integer accuracy or reconstruction
error, and the reference vectors stored in the manifest), the rest the **train** set (calibration of the int8
scales, and the fine-tuning / training the schemes do). The same file always gives the same split.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

SEED = 0
TEST_FRACTION = 0.25
#: The built-in data's record (manifest / report).
DIGITS_SOURCE = {"kind": "digits", "name": "digits", "x_shape": [1797, 1, 8, 8], "y_shape": [1797], "classes": 10,
                 "split": {"seed": SEED, "test_fraction": TEST_FRACTION, "train": 1348, "test": 449}}


@dataclass(frozen=True)
class Dataset:
    """Float32 inputs and int64 labels, split once with a fixed seed (module docstring).

    ``train_x`` / ``test_x``: (B, C, H, W) images or (B, F) feature vectors (the digits: (B, 1, 8, 8) in [0, 16]).
    ``train_y`` / ``test_y``: int64 class indices, or None for data without labels (an autoencoder's).
    ``classes``: the class count (None without labels). ``source``: what the data is (recorded in the manifest
    and the report: kind, file name and SHA-256, shapes, split)."""
    train_x: torch.Tensor
    train_y: torch.Tensor | None
    test_x: torch.Tensor
    test_y: torch.Tensor | None
    classes: int | None = 10
    source: dict | None = field(default=None, compare=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape: (C, H, W), or (F,) for feature vectors (the layer chain sees (F, 1, 1))."""
        return tuple(self.train_x.shape[1:])

    @property
    def labelled(self) -> bool:
        return self.train_y is not None


@lru_cache(maxsize=1)
def digits() -> Dataset:
    """1348 train / 449 test images of sklearn.datasets.load_digits, permuted with seed 0."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target, dtype=torch.int64)
    order = torch.tensor(np.random.default_rng(SEED).permutation(len(y)))
    x, y = x[order], y[order]
    n_test = int(round(len(y) * TEST_FRACTION))
    return Dataset(x[n_test:], y[n_test:], x[:n_test], y[:n_test], source=DIGITS_SOURCE)


#: Fewest samples a data set may have: the split must leave at least 2 test and 6 train samples.
MIN_SAMPLES = 8


def split_order(n: int, seed: int = SEED, test_fraction: float = TEST_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) of the seeded split of ``n`` samples (module docstring; digits' own split)."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return order[n_test:], order[:n_test]


def _numpy(a, what: str, where: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    try:
        return np.asarray(a)
    except Exception as err:
        from .errors import SparsynError
        raise SparsynError(f"{where}: {what} is not an array ({type(err).__name__}); give a numpy array or a "
                           "torch tensor") from None


def dataset_from_arrays(x, y=None, *, classes: int | None = None, name: str = "arrays", seed: int = SEED,
                        test_fraction: float = TEST_FRACTION, source: dict | None = None) -> Dataset:
    """A :class:`Dataset` from inputs ``x`` (numpy array or tensor, float: N×C×H×W images or N×F feature vectors)
    and optional labels ``y`` (integer class indices 0..K-1, length N), split with the seeded permutation of the
    module docstring (``seed``, ``test_fraction``). ``classes``: the class count (default: largest label + 1).

    Every bad input is refused with one :class:`~sparsyn.sw.errors.SparsynError` line naming the problem and
    the fix: a non-float ``x`` or non-integer ``y``, another rank than 2 or 4, NaN / inf in ``x``, a label count
    other than N, negative labels or labels ≥ ``classes``, fewer than :data:`MIN_SAMPLES` samples."""
    from .errors import SparsynError
    where = name
    x = _numpy(x, "x", where)
    if x.dtype.kind != "f":
        raise SparsynError(f"{where}: x has dtype {x.dtype}, not float; the inputs must be float32 (N×C×H×W or N×F): "
                           "convert them with x.astype(numpy.float32)")
    if x.ndim not in (2, 4):
        hint = ("add the channel axis: x[:, None] for one channel" if x.ndim == 3 else
                "reshape it to N×C×H×W (images) or N×F (feature vectors)")
        raise SparsynError(f"{where}: x has shape {tuple(x.shape)} ({x.ndim}-D) but must be N×C×H×W (images) or "
                           f"N×F (feature vectors); {hint}")
    if min(x.shape) < 1:
        raise SparsynError(f"{where}: x has shape {tuple(x.shape)} with an empty dimension; give at least one value "
                           "per sample")
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        raise SparsynError(f"{where}: x holds NaN or inf values in {int(bad.sum())} sample(s) (the first: sample "
                           f"{int(np.argmax(bad))}); remove those samples or replace the values")
    n = len(x)
    if n < MIN_SAMPLES:
        raise SparsynError(f"{where}: x has only {n} sample(s) but the seeded split ({round(100 * test_fraction)} % "
                           f"test) needs at least {MIN_SAMPLES}; give more samples")
    if classes is not None and (isinstance(classes, bool) or int(classes) != classes or classes < 1):
        raise SparsynError(f"{where}: classes={classes!r} is not a positive integer; give the class count, e.g. 10")
    if y is not None:
        y = _numpy(y, "y", where)
        if y.dtype.kind not in "iu":
            raise SparsynError(f"{where}: y has dtype {y.dtype}, not integer; labels must be int64 class indices "
                               "0..K-1: convert them with y.astype(numpy.int64)")
        if y.ndim != 1:
            raise SparsynError(f"{where}: y has shape {tuple(y.shape)} but must hold one label per sample (N,); "
                               "for one-hot labels give y.argmax(1)")
        if len(y) != n:
            raise SparsynError(f"{where}: y has {len(y)} labels but x has {n} samples; give one label per sample")
        if (y < 0).any():
            i = int(np.argmax(y < 0))
            raise SparsynError(f"{where}: y holds negative labels (the first: {int(y[i])} at sample {i}); labels "
                               "are class indices 0..K-1")
        top = int(y.max())
        if classes is not None and top >= classes:
            i = int(np.argmax(y >= classes))
            raise SparsynError(f"{where}: y holds label {int(y[i])} at sample {i} but there are {classes} classes "
                               f"(labels 0..{classes - 1}); fix the labels or the class count")
        classes = int(classes) if classes is not None else top + 1
    else:
        classes = None
    train, test = split_order(n, seed, test_fraction)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)) if y is not None else None
    if source is None:
        digest = hashlib.sha256(np.ascontiguousarray(x).tobytes())
        if y is not None:
            digest.update(np.ascontiguousarray(y).tobytes())
        source = {"kind": "arrays", "name": name, "sha256": digest.hexdigest()}
    source = {**source, "x_shape": list(x.shape), "y_shape": list(y.shape) if y is not None else None,
              "classes": classes,
              "split": {"seed": seed, "test_fraction": test_fraction, "train": len(train), "test": len(test)}}
    return Dataset(xt[train], yt[train] if yt is not None else None, xt[test], yt[test] if yt is not None else None,
                   classes, source)


def dataset_from_torch(ds, *, classes: int | None = None, name: str | None = None, seed: int = SEED,
                       test_fraction: float = TEST_FRACTION) -> Dataset:
    """A :class:`Dataset` from a ``torch.utils.data.Dataset`` whose items are ``(x, y)`` pairs or inputs ``x``
    alone (every sample is read once, stacked, and checked and split as in :func:`dataset_from_arrays`)."""
    from .errors import SparsynError
    name = name or type(ds).__name__
    items = [ds[i] for i in range(len(ds))] if hasattr(ds, "__len__") and hasattr(ds, "__getitem__") else list(ds)
    if not items:
        raise SparsynError(f"{name}: the dataset is empty; give at least {MIN_SAMPLES} samples")
    pairs = isinstance(items[0], (tuple, list))
    if pairs and len(items[0]) != 2:
        raise SparsynError(f"{name}: items have {len(items[0])} parts; give (x, y) pairs or inputs x alone")
    try:
        xs = np.stack([_numpy(it[0] if pairs else it, "x", name) for it in items])
        ys = np.stack([_numpy(it[1], "y", name) for it in items]) if pairs else None
    except ValueError as err:
        raise SparsynError(f"{name}: the samples do not stack into one array ({err}); give samples of one "
                           "shape") from None
    if ys is not None and ys.ndim == 2 and ys.shape[1] == 1:
        ys = ys[:, 0]
    return dataset_from_arrays(xs, ys, classes=classes, name=name, seed=seed, test_fraction=test_fraction)


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_data(path, *, seed: int = SEED, test_fraction: float = TEST_FRACTION) -> Dataset:
    """Your own data from an ``.npz`` file (``numpy.savez(FILE, x=inputs, y=labels)``): ``x`` float32 N×C×H×W
    or N×F, ``y`` int64 labels (optional: without them a model is scored by its reconstruction error), and
    optionally ``classes`` (a scalar: the class count, when some classes have no samples). Split and checked as
    in :func:`dataset_from_arrays`; the record names the file, its SHA-256 and the shapes."""
    from .errors import SparsynError
    path = Path(path)
    fix = "save it with numpy.savez(FILE, x=inputs, y=labels)"
    if not path.exists():
        raise SparsynError(f"data file {path} not found; pass an .npz file: {fix}")
    if path.is_dir():
        raise SparsynError(f"data file {path} is a folder; pass an .npz file: {fix}")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise SparsynError(f"data file {path} holds a single .npy array, not an .npz archive; {fix}")
    if not magic.startswith(b"PK"):              # every .npz is a zip archive
        raise SparsynError(f"data file {path} is not an .npz archive (not a zip file: "
                           f"{'empty' if not magic else 'it starts with ' + repr(magic[:4])}); {fix}")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as err:
        first = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise SparsynError(f"data file {path} is not an .npz archive ({first}); {fix}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise SparsynError(f"data file {path} holds a single .npy array, not an .npz archive; {fix}")
    where = f"data file {path.name}"
    with npz:
        keys = list(npz.files)
        if "x" not in keys:
            held = ", ".join(keys) if keys else "nothing"
            raise SparsynError(f"{where} has no array 'x' (it holds: {held}); name the inputs x: {fix}")
        arrays = {}
        for k in ("x", "y", "classes"):
            if k in keys:
                try:
                    arrays[k] = npz[k]
                except Exception as err:
                    first = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
                    raise SparsynError(f"{where}: array '{k}' cannot be read ({first}); store plain numeric arrays: "
                                       f"{fix}") from None
    classes = None
    if "classes" in arrays:
        c = arrays["classes"]
        if c.size != 1 or c.dtype.kind not in "iu" or int(c.reshape(-1)[0]) < 1:
            raise SparsynError(f"{where}: 'classes' must be one positive integer (the class count), not "
                               f"{c.reshape(-1)[:3].tolist()} of dtype {c.dtype}; e.g. classes=numpy.int64(10)")
        classes = int(c.reshape(-1)[0])
    source = {"kind": "npz", "name": path.name, "file": path.name, "path": str(path.resolve()),
              "sha256": sha256_file(path), "ignored": [k for k in keys if k not in ("x", "y", "classes")]}
    return dataset_from_arrays(arrays["x"], arrays.get("y"), classes=classes, name=where, seed=seed,
                               test_fraction=test_fraction, source=source)


def describe(data: Dataset) -> str:
    """A short name of the data for messages and the manifest: 'digits', 'data.npz (sha256 1a2b3c4d…)', ..."""
    src = data.source or {}
    if src.get("kind") == "digits":
        return "digits"
    if src.get("kind") == "npz":
        return f"{src['file']} (sha256 {src['sha256'][:12]}…)"
    if src.get("kind") == "synthetic":
        return f"synthetic {src['name']} data (seed {src.get('seed')})"
    return str(src.get("name", "arrays"))


def data_record(data: Dataset) -> dict:
    """What the manifest and the report record about ``data``: its source, shapes and split."""
    if data.source is not None:
        return dict(data.source)
    return {"kind": "arrays", "name": "arrays", "x_shape": [len(data.train_x) + len(data.test_x), *data.input_shape],
            "classes": data.classes}


def recorded_data(record: dict | None) -> Dataset:
    """The data a manifest records (:func:`data_record`), made again: the digits, the synthetic data of a zoo
    model, or the ``.npz`` file at its recorded path when its SHA-256 is unchanged; refused in one line when it
    cannot be (arrays given in Python, a moved or changed file)."""
    from .errors import SparsynError
    kind = (record or {"kind": "digits"}).get("kind")
    if kind == "digits":
        return digits()
    if kind == "synthetic":
        from .zoo import zoo_data
        return zoo_data(record["name"], record["n"], record["seed"])
    if kind == "npz":
        path = Path(record.get("path", ""))
        if not path.is_file() or sha256_file(path) != record.get("sha256"):
            raise SparsynError(f"the manifest's data file {record.get('file')} is no longer at {path} or has "
                               "changed (SHA-256 differs); put the file back, or use only the stored reference "
                               "images")
        return load_data(path, seed=record["split"]["seed"], test_fraction=record["split"]["test_fraction"])
    raise SparsynError(f"the manifest's data ({record.get('name', kind)}, given as arrays in Python) cannot be "
                       "read again; use only the stored reference images, or compress with --data FILE.npz")
