"""The pieces of fast adaptation on the real model, without a broker: top-layer LoRA with a
frozen prefix computes what the full model computes, trains, and serves the same; the fast
head improves on the live head from the live encoder's features."""

from __future__ import annotations

import torch
from peft import get_peft_model_state_dict

from models.artifact import LoraSpec
from models.batching import length_sorted_batches
from models.head_fit import fit_head, head_of, with_head
from models.training import (
    FrozenPrefix,
    TaskData,
    TrainConfig,
    build_model,
    export_task_adapter,
    layer_of,
    predict_labels,
    stacks_on,
    top_layers,
    train,
)
from tests.trainer_helpers import crypto_rows

TASK = "tfns-sentiment"


def test_the_frozen_prefix_gives_the_full_models_outputs(base):
    spec = LoraSpec(r=4, lora_alpha=8, lora_dropout=0.0, layers=top_layers(base.encoder, 2))
    model = build_model(base.encoder, [TaskData(TASK, 3, [], [])], spec).eval()
    # Non-zero LoRA weights, so the adapted layers really differ from the base model's.
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.05)
    texts = [t for t, _ in crypto_rows()[:40]]
    ids = base.tokenizer(texts, truncation=True, max_length=64)["input_ids"]
    prefix = FrozenPrefix(
        model, base.tokenizer, ids, spec.layers[0], torch.device("cpu"), bf16=False
    )
    with torch.no_grad():
        for chunk, enc in length_sorted_batches(base.tokenizer, texts, 16, 64, ids=ids):
            full = model(enc["input_ids"], enc["attention_mask"], task=TASK)
            batch, hidden = prefix.batch(chunk)
            fast = model(batch["input_ids"], batch["attention_mask"], task=TASK, prefix=(4, hidden))
            assert torch.allclose(full, fast, atol=1e-4), (full - fast).abs().max()


def assert_learned_and_serves_it(base, model, spec, texts, labels) -> None:
    """The trained model fits its 160 examples, and its exported adapter, merged in the
    serving path, gives the same answers (max length 48, as trained)."""
    trained = predict_labels(
        model, base.tokenizer, TASK, texts, device=torch.device("cpu"), max_length=48, bf16=False
    )
    # It learned: well above the 65% a constant "Bullish" would score on these comments.
    assert sum(p == y for p, y in zip(trained, labels, strict=True)) / len(labels) > 0.75
    blob = export_task_adapter(model, TASK, num_labels=3, base_model_id=base.model_id, spec=spec)
    served = base.predictor(blob, task=TASK, version="t")
    served.max_length = 48
    agree = sum(p.label == q for p, q in zip(served.predict(texts), trained, strict=True))
    assert agree >= len(texts) - 2  # merged LoRA in the serving path: the same answers


def test_a_top_layer_adapter_learns_and_serves_what_it_learned(base):
    rows = crypto_rows()
    texts, labels = [t for t, _ in rows[:160]], [y for _, y in rows[:160]]
    spec = LoraSpec(r=4, lora_alpha=8, lora_dropout=0.0, layers=top_layers(base.encoder, 2))
    config = TrainConfig(
        epochs=2, batch_size=16, max_length=48, validation_fraction=0.0, bf16=False
    )
    result = train(
        base.encoder, base.tokenizer, [TaskData(TASK, 3, texts, labels)], spec=spec,
        config=config, device=torch.device("cpu"),
    )  # fmt: skip
    assert_learned_and_serves_it(base, result.model, spec, texts, labels)


def test_a_job_trains_its_top_layers_on_top_of_an_every_layer_adapter_and_keeps_the_rest(base):
    """An online job on a bootstrap adapter (LoRA on every layer): the LoRA below the job's
    layers runs in the frozen prefix with the bootstrap's weights and stays as it was; the
    top layers learn; the result serves what it learned, in the bootstrap's format."""
    rows = crypto_rows()
    texts, labels = [t for t, _ in rows[:160]], [y for _, y in rows[:160]]
    every = LoraSpec(r=4, lora_alpha=8, lora_dropout=0.0, layers=None)
    torch.manual_seed(0)
    start = build_model(base.encoder, [TaskData(TASK, 3, [], [])], every)
    for name, param in start.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.02)  # a trained bootstrap: its lower layers matter
    init = {k: v.clone() for k, v in get_peft_model_state_dict(start).items() if "lora_" in k}
    config = TrainConfig(
        epochs=2, batch_size=16, max_length=48, validation_fraction=0.0, bf16=False
    )
    top = top_layers(base.encoder, 2)
    assert stacks_on(every, LoraSpec(r=4, lora_alpha=8, lora_dropout=0.0, layers=top))
    result = train(
        base.encoder, base.tokenizer, [TaskData(TASK, 3, texts, labels)], spec=every,
        config=config, device=torch.device("cpu"), lora_init=init, trained_layers=top,
    )  # fmt: skip
    after = get_peft_model_state_dict(result.model)
    for key, before in init.items():
        layer = layer_of(key)
        if layer is None:  # the pooler's dense layer: LoRA has it, mean pooling never runs it
            continue
        if layer in top:
            assert not torch.equal(after[key], before), key
        else:
            assert torch.equal(after[key], before), key
    assert_learned_and_serves_it(base, result.model, every, texts, labels)


def test_the_fast_head_beats_the_live_head_on_new_data_from_the_live_features(base):
    seed = base.seed(TASK)
    predictor = base.predictor(seed, task=TASK, version="base")
    rows = crypto_rows()
    fit_rows, test_rows = rows[:300], rows[300:500]
    old = head_of(seed)
    features = predictor.embed([t for t, _ in fit_rows])
    new = fit_head(features, [y for _, y in fit_rows], 3, prior=old)
    test = predictor.embed([t for t, _ in test_rows])
    truth = torch.tensor([y for _, y in test_rows])
    new_acc = float((new.logits(test).argmax(-1) == truth).float().mean())
    old_acc = float((old.logits(test).argmax(-1) == truth).float().mean())
    assert new_acc > old_acc + 0.15, (old_acc, new_acc)
    # The new head travels in the live adapter's blob and serves exactly what was measured.
    served = base.predictor(with_head(seed, new), task=TASK, version="head")
    labels = [p.label for p in served.predict([t for t, _ in test_rows])]
    assert (
        sum(a == b for a, b in zip(labels, new.logits(test).argmax(-1).tolist(), strict=True))
        >= 198
    )
