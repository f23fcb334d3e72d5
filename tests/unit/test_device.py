"""Precision chosen by measurement: bf16 only where it is native and clearly faster.

The timings are injected (a timer that returns fixed figures), so each outcome is tested on
any machine; one test measures for real and only checks the figures are sane.
"""

from __future__ import annotations

import argparse
import json
import sys
import types

import pytest
import torch

from models import device as dev
from models import packed_linear
from streamtune.cli import bench as bench_cli
from streamtune.core import precision
from streamtune.core.observability import Metrics
from streamtune.core.settings import Settings

CPU = torch.device("cpu")


class Timer:
    """Returns fixed milliseconds per dtype and counts the calls."""

    def __init__(self, fp32_ms: float, bf16_ms: float) -> None:
        self.ms = {torch.float32: fp32_ms, torch.bfloat16: bf16_ms}
        self.calls: list[torch.dtype] = []

    def __call__(self, device: torch.device, dtypes: list[torch.dtype]) -> list[float]:
        self.calls.extend(dtypes)
        return [self.ms[dtype] for dtype in dtypes]


def must_not_measure(device: torch.device, dtypes: list[torch.dtype]) -> list[float]:
    raise AssertionError("measured although a valid cache entry was there")


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """No probe in this process yet, an empty cache dir, and bf16 native unless a test says."""
    monkeypatch.setattr(dev, "_probes", {})
    monkeypatch.setattr(precision, "_recorded", {})
    monkeypatch.setenv("STREAMTUNE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(dev, "bf16_native", lambda device: True)
    return tmp_path


def forget_process_cache(monkeypatch) -> None:
    """As a new process on the same machine: only the file remembers."""
    monkeypatch.setattr(dev, "_probes", {})


@pytest.mark.parametrize(
    ("fp32_ms", "bf16_ms", "native", "want"),
    [
        (2.1, 0.8, True, "bf16"),  # AVX512-BF16: clearly faster
        (10.0, 8.0, True, "bf16"),  # exactly at the margin
        (8.1, 13.9, True, "fp32"),  # the Xeon: "supported", but emulated and slower
        (10.0, 9.0, True, "fp32"),  # only marginally faster: not worth bf16's rounding
        (9.0, 1.0, False, "fp32"),  # not native: fp32 whatever the figures
    ],
)
def test_choice_follows_the_timings(fresh, fp32_ms, bf16_ms, native, want, monkeypatch):
    monkeypatch.setattr(dev, "bf16_native", lambda device: native)
    timer = Timer(fp32_ms, bf16_ms)
    probe = dev.precision_probe(CPU, fresh, timer=timer)
    assert probe.choice == want
    assert probe.fp32_ms == fp32_ms
    assert probe.bf16_native is native
    # Emulated bf16 is never timed, so it costs nothing where it would not be used.
    assert probe.bf16_ms == (bf16_ms if native else None)
    assert timer.calls == ([torch.float32, torch.bfloat16] if native else [torch.float32])
    assert precision.recorded() == [probe]


@pytest.mark.parametrize(
    ("device", "fp32_ms", "bf16_ms", "native", "want"),
    [
        ("cpu", 9.0, 1.0, False, "fp32"),
        ("cpu", 2.0, None, True, "fp32"),
        ("cuda", 0.01, 0.02, True, "bf16"),  # a GPU: torch.cuda.is_bf16_supported() decides
        ("cuda", 0.02, 0.01, False, "fp32"),
    ],
)
def test_choose(device, fp32_ms, bf16_ms, native, want):
    assert precision.choose(device, fp32_ms, bf16_ms, native) == want


@pytest.mark.parametrize(("bf16_ms", "want"), [(0.8, "bf16"), (13.9, "fp32")])
def test_autocast_serving_and_packing_follow_the_probe(fresh, bf16_ms, want):
    dev.precision_probe(CPU, timer=Timer(2.0, bf16_ms))  # the cache dir from the settings
    assert dev.bf16_supported(CPU) is (want == "bf16")
    with dev.autocast(CPU, bf16=True):
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == {
            "bf16": torch.bfloat16,
            "fp32": torch.float32,
        }[want]
    with dev.autocast(CPU, bf16=False):
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.float32
    assert dev.resolve_precision(Settings(cache_dir=fresh), CPU) == want
    explicit = Settings(cache_dir=fresh, serve_precision="fp32")
    assert dev.resolve_precision(explicit, CPU) == "fp32"
    packed_linear.packing_supported.cache_clear()
    try:
        if want == "fp32":
            assert not packed_linear.packing_supported(torch.bfloat16)
    finally:
        packed_linear.packing_supported.cache_clear()
    assert (fresh / dev.CACHE_FILE).exists()


def test_cached_per_machine_and_torch_version(fresh, monkeypatch):
    first = dev.precision_probe(CPU, fresh, timer=Timer(2.0, 0.8))
    assert dev.precision_probe(CPU, fresh, timer=must_not_measure) is first  # in-process
    forget_process_cache(monkeypatch)
    again = dev.precision_probe(CPU, fresh, timer=must_not_measure)  # from the file
    assert (again.fp32_ms, again.bf16_ms, again.choice) == (2.0, 0.8, "bf16")

    forget_process_cache(monkeypatch)
    monkeypatch.setattr(torch, "__version__", "9.9.9+other")
    newer_torch = Timer(2.0, 13.9)
    assert dev.precision_probe(CPU, fresh, timer=newer_torch).choice == "fp32"
    assert newer_torch.calls == [torch.float32, torch.bfloat16]

    forget_process_cache(monkeypatch)
    monkeypatch.setattr(dev, "_cpu_identity", lambda: "Intel Xeon [avx2 avx512f]")
    other_cpu = Timer(8.1, 13.9)
    assert dev.precision_probe(CPU, fresh, timer=other_cpu).choice == "fp32"
    assert other_cpu.calls == [torch.float32, torch.bfloat16]

    stored = json.loads((fresh / dev.CACHE_FILE).read_text())["probes"]
    assert len(stored) == 3 and dev.probe_key(CPU) in stored
    assert any(key.startswith("cpu|Intel Xeon [avx2 avx512f]|torch 9.9.9") for key in stored)


def test_key_names_the_cpu_flags_torch_and_threads():
    key = dev.probe_key(CPU)
    assert key.startswith("cpu|")
    assert f"torch {torch.__version__}" in key
    assert f"threads {torch.get_num_threads()}" in key
    assert "[" in key  # the bf16-relevant CPU flags, listed even where there are none


def test_a_cache_file_cannot_make_emulated_bf16_the_choice(fresh, monkeypatch):
    key = dev.probe_key(CPU)
    (fresh / dev.CACHE_FILE).write_text(
        json.dumps({"probes": {key: {"fp32_ms": 100.0, "bf16_ms": 1.0}}})
    )
    monkeypatch.setattr(dev, "bf16_native", lambda device: False)
    probe = dev.precision_probe(CPU, fresh, timer=must_not_measure)
    assert (probe.choice, probe.bf16_ms, probe.bf16_native) == ("fp32", None, False)


def entry(**fields: object) -> str:
    return json.dumps({"probes": {dev.probe_key(CPU): fields}})


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"\xff\xfe\x00garbage",
        b"\x80\x04\x95pickle-like bytes.",  # never unpickled: just not JSON
        b"[" * 50_000,  # nests deeper than the parser recurses
        b" " * (dev.MAX_CACHE_BYTES + 1),  # larger than any file of ours
        b"[]",
        b'{"probes": []}',
        entry(fp32_ms="fast", bf16_ms=1.0).encode(),
        entry(fp32_ms=True, bf16_ms=1.0).encode(),
        entry(fp32_ms=-1.0, bf16_ms=1.0).encode(),
        entry(fp32_ms=2.0, bf16_ms=[1.0]).encode(),
        entry(fp32_ms=2.0).encode(),  # bf16 native here, but its timing is missing
        b'{"probes": {"%s": {"fp32_ms": NaN, "bf16_ms": 1.0}}}' % dev.probe_key(CPU).encode(),
    ],
)
def test_a_corrupt_cache_file_means_measuring_again(fresh, content):
    (fresh / dev.CACHE_FILE).write_bytes(content)
    timer = Timer(2.0, 0.8)
    probe = dev.precision_probe(CPU, fresh, timer=timer)
    assert timer.calls == [torch.float32, torch.bfloat16]
    assert probe.choice == "bf16"
    stored = json.loads((fresh / dev.CACHE_FILE).read_text())  # rewritten, well formed
    assert stored["probes"][dev.probe_key(CPU)] == {"fp32_ms": 2.0, "bf16_ms": 0.8}


def test_an_unwritable_cache_never_stops_the_process(fresh):
    (fresh / dev.CACHE_FILE).mkdir()  # a folder where the file should be
    timer = Timer(2.0, 13.9)
    assert dev.precision_probe(CPU, fresh, timer=timer).choice == "fp32"
    assert timer.calls == [torch.float32, torch.bfloat16]
    assert not [p for p in fresh.iterdir() if p.name.endswith(".tmp")]


def test_metrics_report_the_choice_and_both_timings(fresh):
    assert b"streamtune_precision_probe_ms{" not in Metrics().render()  # nothing probed yet
    dev.precision_probe(CPU, fresh, timer=Timer(8.1, 13.9))
    text = Metrics().render().decode()
    assert 'streamtune_precision_probe_ms{device="cpu",dtype="fp32"} 8.1' in text
    assert 'streamtune_precision_probe_ms{device="cpu",dtype="bf16"} 13.9' in text
    assert 'streamtune_precision_choice_info{device="cpu",precision="fp32"} 1.0' in text


def test_every_bench_line_carries_the_precision(fresh, monkeypatch, capsys):
    dev.precision_probe(CPU, fresh, timer=Timer(2.0, 0.8))
    settings = Settings(cache_dir=fresh, device="cpu")
    assert bench_cli.precision_figures(settings) == {
        "precision": "bf16",
        "precision_probe_ms": {"fp32": 2.0, "bf16": 0.8},
    }
    fake = types.ModuleType("fake_bench")
    fake.run = lambda settings, args: [{"bench": "fake"}, {"bench": "fake", "precision": "fp32"}]
    monkeypatch.setitem(sys.modules, "fake_bench", fake)
    monkeypatch.setitem(bench_cli.BENCHES, "fake", "fake_bench:run")
    monkeypatch.setattr(bench_cli, "settings_from_args", lambda args: settings)
    bench_cli.cmd_bench(argparse.Namespace(name="fake", json=True))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["precision"] for line in lines] == ["bf16", "fp32"]  # a bench's own wins
    assert all(line["precision_probe_ms"] == {"fp32": 2.0, "bf16": 0.8} for line in lines)


def test_the_real_probe_is_sane(monkeypatch, tmp_path):
    monkeypatch.setattr(dev, "_probes", {})
    monkeypatch.setattr(precision, "_recorded", {})
    probe = dev.precision_probe(CPU, tmp_path)
    assert 0 < probe.fp32_ms < 1000
    assert (probe.bf16_ms is not None) is probe.bf16_native
    assert probe.choice in ("fp32", "bf16")
