"""Data that stays on the host (``--data-placement host``): sources, per-process reading, batch assembly, prefetch.

With ``data_placement="device"`` (the default) every process copies the whole
dataset onto every device and the jitted step gathers its batch there. With
``"host"`` the dataset never leaves the host: for each global batch (or scoring
/ evaluation chunk) each process reads only the rows its own devices hold,
and `jax.make_array_from_process_local_data` assembles them into one global
array split over "data". Training batches travel in blocks of ``host_block``
(``(K, B, ...)`` arrays, one copy for K steps): a background thread
(`Prefetcher`) reads and copies the next few blocks while the device runs the
current step.

Sources. A source is what a stage's ``train`` / ``test`` holds:

- a dict of arrays, axis 0 = examples: numpy arrays in memory, or the
  memory-mapped ``.npy`` files of a folder (`open_npy_dir`, written once by
  `save_npy_dir`): rows are read from disk by the page cache, never all at once;
- a `RecordSource`: anything with ``__len__`` and ``__getitem__(i) -> dict of
  arrays``, which is Grain's random-access source protocol
  (``grain.sources.RandomAccessDataSource``), so a ``grain.MapDataset`` or a
  Grain source followed by a parsing ``map`` plugs in directly.

Why Grain is only the source protocol here, not its sampler or loader: the
teacher decides the epoch's order on device from its score table (and a
scoring pass reads the teacher's ``scoring_order``), so the order is data, not
a seed a Grain ``IndexSampler`` could replay; Grain's ``DataLoader`` shards
records across processes by position in its own order, while we need each
process to read the rows of its devices' slice of a batch the teacher chose;
and a record-at-a-time read is ~100× slower than one numpy fancy-index of a
(memory-mapped) array for MNIST-1D-sized rows. So arrays are read as arrays,
and Grain-style record sources are read record by record (`read_rows`).
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding, Sharding
from jax.sharding import PartitionSpec as P

def first_record(source, name: str) -> tuple[int, dict]:
    """``(len(source), source[0] as a dict of arrays)``; an empty source or a non-dict record is a ValueError."""
    n = len(source)
    if n == 0:
        raise ValueError(f"{name}: got an empty source, expected at least one example")
    first = source[0]
    if not isinstance(first, dict):
        raise ValueError(f"{name}[0]: got {type(first).__name__}, expected a dict of arrays")
    return n, {k: np.asarray(v) for k, v in first.items()}


class RecordSource:
    """A random-access source of records (Grain's protocol: ``__len__``, ``__getitem__(i) -> dict of arrays``).

    Nothing is read up front except record 0, whose keys, shapes and dtypes
    every record must share (a record that differs fails when its batch is read).
    """

    def __init__(self, source, name: str = "source"):
        if not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
            raise ValueError(f"{name}: got {type(source).__name__}, expected a random-access source "
                             "(__len__ and __getitem__(i) -> dict of arrays)")
        self.source, self.name = source, name
        n, first = first_record(source, name)
        self.num_examples = n
        # Full-size shape and dtype per key, as a dict of arrays would have: what the model is sized from.
        self.spec = {k: jax.ShapeDtypeStruct((n,) + v.shape, v.dtype) for k, v in first.items()}

    def __len__(self) -> int:
        return self.num_examples

    def keys(self):
        return self.spec.keys()

    def read(self, idx: np.ndarray) -> dict:
        """Records `idx`, stacked per key (shapes and dtypes checked against record 0)."""
        records = [self.source[int(i)] for i in idx]
        out = {}
        for k, s in self.spec.items():
            column = np.stack([np.asarray(r[k]) for r in records]) if records else np.zeros((0,) + s.shape[1:], s.dtype)
            if column.shape[1:] != s.shape[1:] or column.dtype != s.dtype:
                raise ValueError(f"{self.name}[{k!r}]: got {column.dtype} {column.shape[1:]} in records "
                                 f"{idx[:4].tolist()}..., expected {s.dtype} {s.shape[1:]} as record 0")
            out[k] = column
        return out


def num_examples(source) -> int:
    """Examples of a source: a dict of arrays (axis 0) or a `RecordSource`."""
    return len(source) if isinstance(source, RecordSource) else len(next(iter(source.values())))


def source_spec(source) -> dict:
    """{key: ShapeDtypeStruct of the whole source} without reading it."""
    if isinstance(source, RecordSource):
        return dict(source.spec)
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in source.items()}


def read_rows(source, idx: np.ndarray) -> dict:
    """Rows `idx` (int array) of every key, as numpy arrays in `idx` order."""
    if isinstance(source, RecordSource):
        return source.read(idx)
    return {k: np.asarray(v[idx]) for k, v in source.items()}


def save_npy_dir(path: str, arrays: dict) -> None:
    """Write each array as ``path/KEY.npy`` (written to a temporary name, then renamed: never half a file)."""
    os.makedirs(path, exist_ok=True)
    for k, v in arrays.items():
        tmp = os.path.join(path, f".{k}.tmp{os.getpid()}.npy")
        np.save(tmp, np.asarray(v))
        os.replace(tmp, os.path.join(path, f"{k}.npy"))


def open_npy_dir(path: str) -> dict:
    """The ``KEY.npy`` files of a folder as read-only memory maps (``np.load(mmap_mode="r")``): nothing is loaded."""
    if not os.path.isdir(path):
        raise ValueError(f"data folder: got {path!r}, expected a folder of .npy files")
    names = sorted(f for f in os.listdir(path) if f.endswith(".npy") and not f.startswith("."))
    if not names:
        raise ValueError(f"data folder: {path!r} holds no .npy file, expected one per key (x.npy, y.npy, ...)")
    return {name[:-4]: np.load(os.path.join(path, name), mmap_mode="r") for name in names}


# --------------------------------------------------------------------------- per-process reading

def local_rows(sharding: Sharding, size: int) -> np.ndarray:
    """Positions 0..size-1 of a batch split by `sharding` that this process's devices hold, in device-slice order.

    `jax.make_array_from_process_local_data` maps the process's rows onto its
    devices' slices in increasing order, so this is the order to read them in.
    """
    slices = {(s.start or 0, size if s.stop is None else s.stop)
              for (s, *_) in sharding.addressable_devices_indices_map((size,)).values()}
    return np.concatenate([np.arange(a, b) for a, b in sorted(slices)]).astype(np.int64)


class BatchAssembler:
    """Global arrays of a fixed batch size, split over `sharding`, from this process's rows of a source."""

    def __init__(self, source, sharding: Sharding, size: int):
        self.source, self.sharding, self.size = source, sharding, size
        self.rows = local_rows(sharding, size)

    def __call__(self, ids: np.ndarray, **extra: np.ndarray) -> dict:
        """The source's rows `ids` (the global batch's example ids, (size,)) plus `extra` per-position arrays."""
        local = read_rows(self.source, ids[self.rows])
        local.update({k: np.asarray(v)[self.rows] for k, v in extra.items()})
        return _global_arrays(local, self.sharding, (self.size,))


def _global_arrays(local: dict, sharding: Sharding, leading: tuple) -> dict:
    """Global arrays of shape ``leading + row shape`` from this process's part of each (`local`), split by `sharding`."""
    shapes = {k: leading + v.shape[len(leading):] for k, v in local.items()}
    # An explicit host->device copy, allowed even where the caller's thread disallows implicit ones; one
    # call for the whole dict (a call per array costs ~20% more on the CPU backend).
    with jax.transfer_guard("allow"):
        return jax.make_array_from_process_local_data({k: sharding for k in local}, local, shapes)


def chunk_ids(order: np.ndarray, count: int, chunk: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ids, valid) of each fixed-size chunk of ``order[:count]``, the last padded by wrapping around `order`."""
    n = len(order)
    out = []
    for c in range(-(-count // chunk)):
        pos = c * chunk + np.arange(chunk)
        out.append((order[pos % n].astype(np.int32), pos < count))
    return out


# --------------------------------------------------------------------------- prefetch

class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher:
    """``make(0), make(1), ..., make(count - 1)`` computed by a background thread, at most `depth` ahead.

    Iterate it to get them in order. An exception in `make` is raised by the
    iteration in the calling thread (the same exception object); `close()` (or
    leaving the ``with`` block) stops the thread and drops what it holds.
    """

    def __init__(self, make: Callable[[int], Any], count: int, depth: int = 2, start: int = 0):
        self._make, self._range = make, range(start, count)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="attent-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self):
        try:
            for i in self._range:
                if self._stop.is_set() or not self._put(self._make(i)):
                    return
        except BaseException as err:  # handed to the consumer, which re-raises it
            self._put(_Failed(err))

    def __iter__(self):
        for _ in self._range:
            item = self._queue.get()
            if isinstance(item, _Failed):
                self.close()
                raise item.error
            yield item

    def close(self):
        """Stop the thread and drop any prefetched items (idempotent)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def block_sharding(batch_sharding: NamedSharding) -> NamedSharding:
    """A block of batches, (K, B, ...): the batch axis split as in `batch_sharding`, the block axis whole.

    Why blocks: one assembly costs the host about 0.15 ms (three arrays made
    global), about what dispatching a small model's 2-ms step costs. Paid per
    batch, the prefetch thread's work slowed the steps on two cores; paid per
    block of K it is a K-th of that per step (bench_data measures both).
    """
    return NamedSharding(batch_sharding.mesh, P(None, *batch_sharding.spec))


def epoch_batches(source, order, batch_size: int, sharding: NamedSharding, start: int, stop: int,
                  depth: int, block: int) -> Iterator[dict]:
    """For each position `start`..`stop`-1 of an epoch in `order` (the teacher's), the block holding its batch.

    Position ``pos`` trains on examples ``order[pos * B:(pos + 1) * B]``. Blocks
    hold the batches of positions ``[j * block, (j + 1) * block)``, a dict of
    global arrays of shape ``(block, B, ...)`` plus "idx" (the example ids, which
    the train step writes scores for); the step takes batch ``pos % block`` of
    the block it is handed. Positions outside ``[start, stop)`` in the first
    and last block are never trained on, so their rows are not read (they hold
    a copy of a used batch). A background thread reads and copies up to `depth` blocks ahead. `order`
    may be a device array: it is fetched here, once (an explicit copy).
    """
    order = np.asarray(jax.device_get(order))
    assemble = BlockAssembler(source, sharding, batch_size)
    first = start // block

    def make(j):
        pos = (first + j) * block + np.arange(block)
        ids_KxB = order[(pos[:, None] * batch_size + np.arange(batch_size)) % len(order)]
        return assemble(ids_KxB, (pos >= start) & (pos < stop))

    blocks = range(first, (stop - 1) // block + 1) if stop > start else range(0)
    return _Repeated(Prefetcher(make, len(blocks), depth),
                     [min(stop, (j + 1) * block) - max(start, j * block) for j in blocks])


class BlockAssembler:
    """Blocks of K batches, ``(K, size, ...)`` global arrays, from this process's rows of a source."""

    def __init__(self, source, batch_sharding: NamedSharding, size: int):
        self.source, self.sharding, self.size = source, block_sharding(batch_sharding), size
        self.rows = local_rows(batch_sharding, size)

    def __call__(self, ids_KxB: np.ndarray, used_K: np.ndarray) -> dict:
        """The block of batches `ids_KxB`; only the rows of batches `used_K` are read (each other one copies a used one)."""
        local_ids = ids_KxB[:, self.rows]
        used = np.flatnonzero(used_K)
        # Each batch's place among the used ones: a record source (say, decoding images) reads no row in vain.
        place_K = np.maximum(np.cumsum(used_K) - 1, 0)
        local = {k: v.reshape((used.size, len(self.rows)) + v.shape[1:])[place_K]
                 for k, v in read_rows(self.source, local_ids[used].reshape(-1)).items()}
        local["idx"] = local_ids[used][place_K].astype(np.int32)
        return _global_arrays(local, self.sharding, (len(ids_KxB), self.size))


class _Repeated:
    """Each item of a `Prefetcher` as many times as `counts` says, in order; `close()` closes the prefetcher."""

    def __init__(self, prefetcher: Prefetcher, counts: list[int]):
        self.prefetcher, self.counts = prefetcher, counts

    def __iter__(self):
        for block, count in zip(self.prefetcher, self.counts):
            for _ in range(count):
                yield block

    def close(self):
        self.prefetcher.close()
