"""The surge detector, entity extraction and the webhook sink, without a broker."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from schemas import Alert
from streams.alert_agent import to_alert
from streams.alerting import AlertBook, AlertConfig, EntityState
from streams.entities import EntityExtractor
from streams.sightings import Sighting
from streams.webhook import WebhookConfig, WebhookSink
from streamtune.core.errors import ConfigError

T = 1_700_000_000_000
STEADY = [0, 1, 2, 2, 1] * 8  # 20% bearish, 40% bullish
CFG = AlertConfig(window_events=10, min_events=8, min_baseline_events=20, h_fire=3.0)


def feed(book: AlertBook, labels: list[int], *, entity: str = "ACME", start: int = 0,
         step_ms: int = 1000, confidence: float = 0.9) -> list[tuple[int, str]]:  # fmt: skip
    fired = []
    for i, label in enumerate(labels, start):
        s = Sighting(entity, f"{entity}-{i}", "tfns-sentiment", f"t{i}", label, confidence, "v1",
                     T + i * step_ms)  # fmt: skip
        fired += [(i, a.kind) for a in book.observe(s, partition=0, offset=i)]
    return fired


def test_one_surge_is_one_alert_and_hysteresis_holds_it():
    book = AlertBook(CFG)
    fired = feed(book, STEADY + [0] * 30 + [0, 2] * 5 + [0] * 10)
    # The surge stays above h_clear for the whole 50 events: one alert only.
    assert fired == [(44, "bearish_surge")]


def test_hysteresis_a_short_lull_is_the_same_surge():
    # Eight neutral sightings inside a bearish run: the CUSUM dips, but not below h_clear.
    stream = STEADY + [0] * 12 + [2] * 8 + [0] * 12
    held = AlertBook(AlertConfig(**{**CFG.__dict__, "h_clear": 0.5, "cooldown_ms": 0}))
    assert [i for i, _ in feed(held, stream)] == [44]
    none = AlertBook(AlertConfig(**{**CFG.__dict__, "h_clear": 3.0, "cooldown_ms": 0}))
    assert [i for i, _ in feed(none, stream)] == [44, 65]


def test_a_second_surge_after_the_cooldown_alerts_again_but_not_within_it():
    surge_and_calm = [0] * 12 + STEADY
    short = AlertBook(AlertConfig(**{**CFG.__dict__, "cooldown_ms": 10_000}))
    assert [k for _, k in feed(short, STEADY + surge_and_calm * 2)] == ["bearish_surge"] * 2
    long = AlertBook(AlertConfig(**{**CFG.__dict__, "cooldown_ms": 3_600_000}))
    assert [k for _, k in feed(long, STEADY + surge_and_calm * 2)] == ["bearish_surge"]
    assert long.counts["suppressed"] == 1


def test_the_end_of_a_surge_is_not_a_surge_of_the_other_sentiment():
    # A long bearish run, then the entity's usual mix again. Were the run folded into the
    # baseline, bullish would look rare, and its return to normal would read as a surge.
    # (Without the freeze, this stream fires a bullish surge at event 110.)
    usual = [1, 2, 1, 0, 1] * 8  # 60% bullish, 20% bearish
    stream = usual + [0] * 60 + usual * 2
    fired = feed(AlertBook(AlertConfig(**{**CFG.__dict__, "h_clear": 0.5})), stream)
    assert fired == [(44, "bearish_surge")]


def test_bullish_surges_are_watched_too():
    assert feed(AlertBook(CFG), [0, 0, 2, 2, 1] * 8 + [1] * 12)[0][1] == "bullish_surge"


def test_minimum_volume_and_minimum_baseline():
    # A new entity whose first sightings are all bearish has no baseline yet: no alert.
    assert feed(AlertBook(CFG), [0] * 40) == []
    # A window with fewer than min_events sightings (the rest aged out) cannot alert.
    config = AlertConfig(**{**CFG.__dict__, "window_ms": 5_000})
    assert feed(AlertBook(config), STEADY + [0] * 20) == []


def test_a_replayed_offset_is_not_applied_twice():
    book = AlertBook(CFG)
    feed(book, STEADY)
    before = book.state("ACME").to_dict()
    assert feed(book, STEADY[-5:], start=len(STEADY) - 5) == []
    assert book.state("ACME").to_dict() == before


def test_state_round_trips_through_the_store_and_keeps_the_surge():
    store: dict = {}
    book = AlertBook(CFG, store)
    assert feed(book, STEADY + [0] * 12)
    book.changes()
    again = AlertBook(CFG, store)  # a restarted worker, its table recovered
    assert feed(again, [0] * 5, start=52) == []  # the same surge: no second alert
    state = again.state("ACME")
    assert state.active["bearish_surge"]
    # The recovered baseline holds (frozen while the surge lasts), and is not a fresh one.
    assert state.base_events == book.state("ACME").base_events > 0


def test_quiet_entities_are_evicted_and_the_count_is_bounded():
    config = AlertConfig(**{**CFG.__dict__, "evict_after_ms": 60_000, "max_entities": 3})
    store: dict = {}
    book = AlertBook(config, store)
    for n in range(5):
        feed(book, [1, 2], entity=f"E{n}", start=n * 10, step_ms=1)
    book.changes()
    assert book.evict(T + 100) == ["E0", "E1"]  # over max_entities: the quietest go
    changes = book.changes()
    assert changes["E0"] == (0, None) and sorted(store) == ["E2", "E3", "E4"]
    assert book.evict(T + 120_000) == ["E2", "E3", "E4"]  # quiet for longer than a minute
    book.changes()
    assert store == {} and book.states == {}


def test_remembered_alerts_restore_the_cooldown():
    book = AlertBook(CFG)
    feed(book, STEADY)
    book.remember_alert("ACME", "bearish_surge", T + 39_000, 0)
    assert feed(book, [0] * 12, start=40) == []


def test_surge_becomes_a_valid_alert():
    book = AlertBook(CFG)
    feed(book, STEADY)
    s = Sighting("ACME", "x-1", "tfns-sentiment", "$ACME crashes", 0, 0.99, "v7", T + 50_000)
    surges = []
    for i in range(12):
        surges += book.observe(s.__class__(**{**s.__dict__, "interaction_id": f"x-{i}"}),
                               partition=0, offset=100 + i)  # fmt: skip
    alert = to_alert(surges[0], T + 60_000)
    assert Alert.from_bytes(alert.to_bytes()) == alert
    assert alert.examples == ["$ACME crashes"] * 3 and alert.adapter_version == "v7"
    assert alert.share > alert.baseline_share and alert.count == 10


def test_entity_state_reads_old_and_new_fields():
    state = EntityState.from_dict({"entity": "X", "pos": 3, "someday": 1})
    assert state.pos == 3 and "someday" not in state.to_dict()


# --- entities ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$AAPL and $msft up, $BRK.B flat", ("AAPL", "MSFT", "BRK.B")),
        ("costs $5 or $1.5bn, e-mail a$b", ()),
        ("$AAPL $AAPL $aapl", ("AAPL",)),
        ("Reliance Industries (RIL) and reliance   industries", ("RELIANCE",)),
        ("$A $B $C $D $E", ("A", "B", "C")),
        ("TRILL is not RIL-ated", ("RELIANCE",)),
    ],
)
def test_entity_extraction(text, expected, tmp_path):
    path = tmp_path / "entities.csv"
    path.write_text("entity,alias\nRELIANCE,Reliance Industries\nRELIANCE,RIL\n")
    assert EntityExtractor.from_csv(path).extract(text) == expected


def test_the_entity_field_wins_and_bad_files_name_the_rows(tmp_path):
    x = EntityExtractor.from_csv(None)
    assert x.extract("$AAPL up", entity="msft") == ("MSFT",)
    bad = tmp_path / "bad.csv"
    bad.write_text("entity,alias\nGOOD,alias\nno good at all because far too long a name,x\n")
    with pytest.raises(ConfigError, match=r"rows \[2\]"):
        EntityExtractor.from_csv(bad)


# --- webhook ----------------------------------------------------------------------------
def _alert(n: int) -> Alert:
    return Alert(alert_id=f"a-{n}", kind="bearish_surge", task="tfns-sentiment", entity="ACME",
                 window_start_ts_ms=T, window_end_ts_ms=T, count=10, share=0.9,
                 baseline_share=0.2, message="surge", ts_ms=T)  # fmt: skip


def test_webhook_retries_then_delivers_with_the_token_and_dead_letters_what_fails():
    async def go():
        seen: list[tuple[str, str | None]] = []
        answers = iter([503, 200, 400])

        async def handler(request: web.Request) -> web.Response:
            body = await request.json()
            seen.append((body["alert_id"], request.headers.get("Authorization")))
            return web.Response(status=next(answers))

        app = web.Application()
        app.router.add_post("/hook", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        dead: list[tuple[str, str]] = []

        async def undeliverable(alert: Alert, offset: int | None, why: str) -> None:
            dead.append((alert.alert_id, why))

        sink = WebhookSink(
            WebhookConfig(f"http://127.0.0.1:{port}/hook", token="s3cret", backoff_s=0.01),
            undeliverable,
        )
        task = asyncio.ensure_future(sink.run())
        assert sink.offer(_alert(1)) and sink.offer(_alert(2))
        for _ in range(200):
            if sink.counts["delivered"] + sink.counts["failed"] == 2:
                break
            await asyncio.sleep(0.02)
        task.cancel()
        await runner.cleanup()
        return seen, dead, sink.counts, repr(sink.config)

    seen, dead, counts, shown = asyncio.run(go())
    assert seen == [("a-1", "Bearer s3cret")] * 2 + [("a-2", "Bearer s3cret")]
    assert counts["delivered"] == 1 and counts["retries"] == 1 and counts["failed"] == 1
    assert dead == [("a-2", "HTTP 400 from " + shown.split("'")[1])]
    assert "s3cret" not in shown


# --- the benchmark's stream and scoring -------------------------------------------------
def test_bench_stream_has_bursts_where_it_says_and_scoring_counts_repeats_as_false():
    from streamtune.bench.alerts_bench import BURST_EVENTS, build_stream, score
    from streamtune.core.settings import Settings

    stream = build_stream(Settings().data_dir, 4500)
    assert len(stream.bursts) == 16 and sum(stream.in_burst) == 16 * BURST_EVENTS
    burst = stream.bursts[0]
    events = [i for i, t in enumerate(stream.tickers) if t == burst.ticker]
    first = events[burst.start]
    assert stream.in_burst[first] and not stream.in_burst[events[burst.start - 1]]
    assert stream.texts[first].startswith(f"${burst.ticker} ")
    hit = (burst.ticker, burst.kind, events[burst.start + 9])
    figures = score(stream, [hit, hit, ("TK99", "bearish_surge", 0)])
    assert figures["true_alerts"] == 1 and figures["false_alerts"] == 2
    assert figures["median_detection_delay_events"] == 10
    assert figures["alert_recall"] == 1 / 16


def test_the_threshold_baseline_is_tuned_on_its_own_seeds_and_then_beats_its_default():
    """With perfect answers the tuned rule meets the alert bar on the held-out stream (seed 7,
    not a tuning seed), and scores no worse there than the untuned rule (half of the last 20)."""
    from streams.alerting import AlertConfig
    from streamtune.bench.alerts_bench import (
        SEED,
        TUNING_SEEDS,
        build_stream,
        score,
        threshold_baseline,
        tune_threshold_baseline,
    )
    from streamtune.core.settings import Settings

    data, cfg = Settings().data_dir, AlertConfig()
    truth = {}
    for seed in TUNING_SEEDS:
        stream = build_stream(data, 4500, seed)
        truth.update(zip(stream.texts, stream.labels, strict=True))
    asked: list[str] = []

    def answer(texts: list[str]) -> list[int]:
        asked.extend(texts)
        return [truth[t] for t in texts]

    share, window = tune_threshold_baseline(data, 4500, cfg, answer)
    assert SEED not in TUNING_SEEDS and len(asked) == 4 * 4500  # tuned on its own seeds only
    held_out = build_stream(data, 4500)
    labels: list[int | None] = list(held_out.labels)
    tuned = score(held_out, threshold_baseline(held_out, labels, cfg, share, window))
    default = score(held_out, threshold_baseline(held_out, labels, cfg))
    assert tuned["alert_precision"] >= 0.9 and tuned["alert_recall"] >= 0.9, (share, window)
    assert tuned["true_alerts"] - tuned["false_alerts"] >= (
        default["true_alerts"] - default["false_alerts"]
    )
