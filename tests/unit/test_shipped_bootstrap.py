"""The shipped bootstrap adapter: what a first run uses instead of training for 10-30 minutes.

It must be the adapter the default recipe builds (its cache key), its bytes must match its
sha256, it must beat the seed model on the anchor set (the gate runs on it like on a trained
one) and reach TFNS valid >= 0.87; any other input, or altered bytes, trains instead.
"""

from __future__ import annotations

import hashlib
import shutil

import orjson
import pytest

from models.bootstrap import (
    SHIPPED_DIR,
    SHIPPED_SHA256,
    cache_key,
    cached_file,
    evaluate_file,
    read_cached,
    read_shipped,
    shipped_files,
    write_shipped,
)
from models.seed import split_seed_data
from streamtune.core.settings import Settings
from streamtune.train.bootstrap import _eval_set, build
from streamtune.train.config import bootstrap_recipe

TASK = "tfns-sentiment"
REBUILD = f"streamtune bootstrap {TASK} --rebuild --ship --no-publish"


def default_key(base, settings: Settings) -> str:
    spec, config = bootstrap_recipe(settings.train, base.encoder)
    (texts, labels), _ = split_seed_data(TASK, settings.data_dir)
    return cache_key(TASK, base.model_id, texts, labels, spec, config)


def test_the_shipped_adapter_is_what_the_default_recipe_builds(base):
    blob_path, record_path = shipped_files(TASK)
    record = orjson.loads(record_path.read_bytes())
    assert record["cache_key"] == default_key(base, Settings()), (
        f"the bootstrap recipe, the seed data or the base model changed: run `{REBUILD}` "
        "and commit models/shipped/"
    )
    assert hashlib.sha256(blob_path.read_bytes()).hexdigest() == record["sha256"]
    assert SHIPPED_SHA256[TASK] == record["sha256"], f"pin the new sha256 after `{REBUILD}`"
    assert record["version"] == f"bootstrap-{record['cache_key'][:12]}"
    assert record["eval_accuracy"] >= 0.87


def test_altered_bytes_another_recipe_or_a_bad_record_are_not_used(base, tmp_path, caplog):
    key = default_key(base, Settings())
    assert read_shipped(TASK, key) is not None
    blob_path, record_path = shipped_files(TASK, tmp_path)
    shutil.copy(shipped_files(TASK)[1], record_path)
    blob = bytearray(shipped_files(TASK)[0].read_bytes())
    blob[-1] ^= 1
    blob_path.write_bytes(bytes(blob))
    assert read_shipped(TASK, key, tmp_path) is None
    assert "do not match the sha256" in caplog.text
    record = orjson.loads(record_path.read_bytes())
    record["sha256"] = hashlib.sha256(bytes(blob)).hexdigest()  # the record edited to match
    record_path.write_bytes(orjson.dumps(record))
    assert read_shipped(TASK, key, tmp_path) is None
    assert "not the one pinned" in caplog.text
    shutil.copy(shipped_files(TASK)[0], blob_path)
    shutil.copy(shipped_files(TASK)[1], record_path)
    assert read_shipped(TASK, key, tmp_path) is not None  # the copy itself is fine
    assert read_shipped(TASK, "0" * 64, tmp_path) is None  # built from other inputs
    record_path.write_bytes(b'{"cache_key": 1}')
    assert read_shipped(TASK, key, tmp_path) is None
    assert "bad record" in caplog.text
    assert read_shipped("banking77-intent", key, tmp_path) is None  # none shipped


@pytest.mark.timeout(600)
def test_a_first_run_uses_the_shipped_adapter_without_training(tmp_path):
    settings = Settings(cache_dir=tmp_path)

    def no_training(progress: object) -> None:
        raise AssertionError("the first run trained instead of using the shipped adapter")

    base, first = build(settings, TASK, on_progress=no_training)
    assert first.shipped and not first.cached
    assert first.decision is not None and first.decision.promote  # gated like a trained one
    record = orjson.loads(shipped_files(TASK)[1].read_bytes())
    assert first.version == record["version"]
    assert first.metrics["train_seconds"] == record["metrics"]["train_seconds"]

    texts, labels = _eval_set(TASK, settings.data_dir)
    assert evaluate_file(base, first.blob, TASK, texts, labels) >= 0.87
    _, again = build(settings, TASK, base, on_progress=no_training)  # now from the cache
    assert again.cached and again.shipped and again.blob == first.blob


def test_the_shipped_directory_holds_only_adapters_and_their_records():
    names = sorted(p.name for p in SHIPPED_DIR.iterdir())
    assert names == [f"{TASK}.json", f"{TASK}.safetensors"]


@pytest.mark.timeout(900)
def test_rebuild_trains_anew_and_ships_what_it_trained(tmp_path):
    # A small recipe (its own cache key): the path a maintainer's `--rebuild --ship` takes.
    settings = Settings(
        cache_dir=tmp_path / "cache", bootstrap_lora_layers=1, bootstrap_epochs=1, train_bf16=False
    )
    steps: list[object] = []
    base, trained = build(settings, TASK, on_progress=steps.append)
    assert steps and not trained.shipped and not trained.cached
    assert trained.metrics["train_seconds"] > 0
    _, cached = build(settings, TASK, base, on_progress=steps.append)
    assert cached.cached
    count = len(steps)
    _, again = build(settings, TASK, base, on_progress=steps.append, rebuild=True)
    assert len(steps) > count and not again.cached  # trained again despite the cache,
    assert again.version == cached.version  # ... and cached nothing: one version, one blob
    with pytest.raises(ValueError, match="--rebuild"):
        write_shipped(cached, recipe="r", extra={}, directory=tmp_path / "ship")
    record = write_shipped(again, recipe="r", extra={}, directory=tmp_path / "ship")
    assert read_shipped(TASK, again.key, record.parent) is None  # its sha256 is not pinned
    pinned = {TASK: hashlib.sha256(again.blob).hexdigest()}
    found = read_shipped(TASK, again.key, record.parent, pinned)
    assert found is not None and found[0] == again.blob
    assert read_cached(cached_file(settings.cache_dir, TASK, again.key)[1])[0] == cached.blob
    assert read_shipped(TASK, again.key) is None  # the repo ships another recipe's adapter


def test_an_altered_cache_is_not_used(base, tmp_path, caplog):
    settings = Settings(cache_dir=tmp_path)
    _, first = build(settings, TASK, base)
    path = cached_file(tmp_path, TASK, first.key)[1]
    assert read_cached(path) is not None
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    assert read_cached(path) is None and "do not match the sha256" in caplog.text
    _, again = build(settings, TASK, base)  # the shipped adapter again, not the altered bytes
    assert again.blob == first.blob and again.shipped and not again.cached
