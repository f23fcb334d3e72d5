"""Choose the torch device, thread count and precision once, from the settings.

Precision is measured, not assumed: a CPU can report oneDNN bf16 support yet only emulate it
(AVX-512 without AVX512-BF16 or AMX), where bf16 runs slower than fp32. At first use
:func:`precision_probe` times a short matrix multiply in both dtypes and picks bf16 only where
it is native and clearly faster (:func:`streamtune.core.precision.choose`). The timings are
kept per process and in ``<cache_dir>/precision-probe.json``, keyed by CPU (or GPU), torch
version and thread count, so a process on the same machine reads them instead of measuring.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from models.inference import Precision
from streamtune.core.precision import PrecisionProbe, choose, record
from streamtune.core.settings import Settings

log = logging.getLogger(__name__)

#: The probe's GEMM: a batch of 256 tokens through a 384 -> 1536 layer, MiniLM's feed-forward.
GEMM_SHAPE = (256, 384, 1536)
WARMUP_RUNS = 3
TIMED_RUNS = 15  # the median of these; the whole probe takes well under a second
CACHE_FILE = "precision-probe.json"
#: A cache file larger than this is not ours (a few entries take a few hundred bytes).
MAX_CACHE_BYTES = 64 * 1024
MAX_CACHE_ENTRIES = 32
#: CPU flags that decide whether bf16 is native or emulated; part of the cache key.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")

#: Median milliseconds of the probe's GEMM on a device, one figure per dtype asked for.
Timer = Callable[[torch.device, Sequence[torch.dtype]], list[float]]

_lock = threading.Lock()
_probes: dict[str, PrecisionProbe] = {}


def resolve_device(settings: Settings) -> torch.device:
    """``cuda`` when asked for or (``auto``) available, else ``cpu``; sets CPU threads.

    >>> resolve_device(Settings(device="cpu")).type
    'cpu'
    """
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    if settings.device == "cuda" and not torch.cuda.is_available():
        from streamtune.core.errors import ConfigError

        raise ConfigError("STREAMTUNE_DEVICE=cuda but torch sees no CUDA device")
    if settings.device == "cuda" or (settings.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def gemm_ms(device: torch.device, dtypes: Sequence[torch.dtype]) -> list[float]:
    """Median milliseconds of one :data:`GEMM_SHAPE` matrix multiply on ``device`` per dtype.

    The dtypes take turns, run by run, so that a burst of other work on the machine slows
    them alike instead of deciding the comparison.

    >>> [ms > 0 for ms in gemm_ms(torch.device("cpu"), [torch.float32])]
    [True]
    """
    m, k, n = GEMM_SHAPE
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
    operands = [(a.to(device, dtype), b.to(device, dtype)) for dtype in dtypes]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: list[list[float]] = [[] for _ in dtypes]
    with torch.inference_mode():
        for x, y in operands:
            for _ in range(WARMUP_RUNS):
                torch.mm(x, y)
        sync()
        for _ in range(TIMED_RUNS):
            for (x, y), spent in zip(operands, times, strict=True):
                began = time.perf_counter()
                torch.mm(x, y)
                sync()
                spent.append(time.perf_counter() - began)
    return [round(1000 * statistics.median(spent), 4) for spent in times]


def bf16_native(device: torch.device) -> bool:
    """Whether torch has native bf16 kernels for ``device`` (not whether they pay)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@functools.cache
def _cpu_identity() -> str:
    """The CPU's model name and which of :data:`CPU_FLAGS` it has."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break  # every core lists the same; the model name comes first
    except OSError:
        pass  # not Linux: the platform's name, no flags
    return f"{model} [{' '.join(f for f in CPU_FLAGS if f in flags)}]"


def probe_key(device: torch.device) -> str:
    """What a measurement holds for: the device (CPU model and flags, or GPU), torch, threads."""
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_identity()
    return f"{device.type}|{hardware}|torch {torch.__version__}|threads {torch.get_num_threads()}"


def _valid_ms(value: object) -> bool:
    # bool is an int; NaN and infinities parse from JSON; an hour is no GEMM of this size.
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value < 3_600_000
    )


def _read_cache(path: Path) -> dict[str, object]:
    """The file's entries, or none when it is missing, too large, not JSON or not ours."""
    try:
        if path.stat().st_size > MAX_CACHE_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: "[[[[..." nested deep
        return {}
    entries = data.get("probes") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def _cached_timings(path: Path, key: str) -> tuple[float, float | None] | None:
    """(fp32_ms, bf16_ms) stored for ``key``, if the entry is well formed."""
    entry = _read_cache(path).get(key)
    if not isinstance(entry, dict):
        return None
    fp32, bf16 = entry.get("fp32_ms"), entry.get("bf16_ms")
    if not _valid_ms(fp32) or not (bf16 is None or _valid_ms(bf16)):
        return None
    return fp32, bf16


def _write_cache(path: Path, key: str, probe: PrecisionProbe) -> None:
    """Add ``key``'s timings to the file, atomically; a failure only costs a re-measure."""
    entries = {k: v for k, v in _read_cache(path).items() if k != key}
    entries[key] = {"fp32_ms": probe.fp32_ms, "bf16_ms": probe.bf16_ms}
    kept = dict(list(entries.items())[-MAX_CACHE_ENTRIES:])  # the newest; the file stays small
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=".precision-", suffix=".tmp", delete=False
        ) as handle:
            temporary = Path(handle.name)
            json.dump({"probes": kept}, handle, indent=1)
        os.replace(temporary, path)
    except OSError as exc:
        log.info("could not cache the precision probe in %s (%s)", path, exc)
        if temporary is not None:
            temporary.unlink(missing_ok=True)


def _default_cache_dir() -> Path | None:
    try:
        return Settings().cache_dir
    except ValueError:  # unreadable settings: measure, keep the result in this process only
        return None


def precision_probe(
    device: torch.device, cache_dir: Path | None = None, timer: Timer = gemm_ms
) -> PrecisionProbe:
    """Measured fp32 and bf16 matrix-multiply times on ``device`` and the precision to use.

    Measured once per process and machine: later calls return the same probe, and the
    timings are read from ``<cache_dir>/precision-probe.json`` (``cache_dir`` defaults to
    the settings') when they were measured there on the same hardware, torch and thread
    count. A missing, corrupt or foreign file means measuring again. Whether bf16 is native
    is always checked afresh, so a cache file can never make emulated bf16 the choice.
    ``timer`` measures (tests pass their own timings).
    """
    key = probe_key(device)
    with _lock:
        if key in _probes:
            return _probes[key]
        native = bf16_native(device)
        directory = cache_dir if cache_dir is not None else _default_cache_dir()
        path = None if directory is None else directory / CACHE_FILE
        cached = _cached_timings(path, key) if path is not None else None
        if cached is None or (native and cached[1] is None):
            timings = timer(device, [torch.float32, torch.bfloat16] if native else [torch.float32])
            fp32_ms, bf16_ms = timings[0], timings[1] if native else None
            source = "measured"
        else:
            fp32_ms, bf16_ms = cached[0], cached[1] if native else None
            source = f"read from {path}"
        probe = PrecisionProbe(
            device.type, fp32_ms, bf16_ms, native, choose(device.type, fp32_ms, bf16_ms, native)
        )
        if source == "measured" and path is not None:
            _write_cache(path, key, probe)
        log.info(
            "precision on %s: %s (matrix multiply fp32 %.2f ms, bf16 %s ms; %s)",
            device.type, probe.choice, fp32_ms, "-" if bf16_ms is None else f"{bf16_ms:.2f}",
            source,
        )  # fmt: skip
        _probes[key] = probe
    record(probe)
    return probe


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 is native on ``device`` and measured clearly faster than fp32 there."""
    return precision_probe(device).choice == "bf16"


def autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """bf16 autocast when asked for and it pays on ``device``; a no-op context otherwise."""
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=bf16 and bf16_supported(device)
    )


def resolve_precision(settings: Settings, device: torch.device) -> Precision:
    """``auto`` picks what :func:`precision_probe` measured as faster: bf16 where it is native
    (AVX512-BF16/AMX, or a GPU with bf16) and clearly faster, fp32 elsewhere. The probe runs
    whatever the setting, so ``/metrics`` and the benchmarks always report it."""
    probe = precision_probe(device, settings.cache_dir)
    if settings.serve_precision != "auto":
        return settings.serve_precision
    return probe.choice
