"""The online-learning baseline of ``bench adapt``: a River text model that learns one
labelled event at a time (test, then train), warmed up on the same seed data as the
streamtune seed model so neither side starts with more knowledge."""

from __future__ import annotations

from river import compose, feature_extraction, linear_model, multiclass, naive_bayes, optim


def make_model(kind: str = "logreg", value: float = 0.5) -> object:
    """TF-IDF of word uni- and bigrams into one-vs-rest logistic regression (``value`` is the
    SGD learning rate), or word counts into multinomial naive Bayes (``value`` is alpha)."""
    if kind == "nb":
        words = feature_extraction.BagOfWords(lowercase=True, ngram_range=(1, 2))
        return compose.Pipeline(words, naive_bayes.MultinomialNB(alpha=value))
    tfidf = feature_extraction.TFIDF(lowercase=True, ngram_range=(1, 2))
    regression = linear_model.LogisticRegression(optimizer=optim.SGD(value), l2=1e-5)
    return compose.Pipeline(tfidf, multiclass.OneVsRestClassifier(regression))


def prequential(
    model: object,
    warmup: list[tuple[str, int]],
    stream: list[tuple[str, int]],
    *,
    given: list[int | None] | None = None,
    delay_events: int = 0,
) -> list[bool]:
    """Warm up on ``warmup``, then for each event predict first and learn after; hits in order.

    With ``given`` (the label each event's feedback carries, None for none), the model learns
    only those labels, each ``delay_events`` events after its event: the feedback the live
    pipeline gets. Without it, it learns every true label at once, which favours it.

    >>> stream = [("up up", 1), ("down", 0), ("up", 1), ("down down", 0)]
    >>> prequential(make_model("nb", 0.5), [("up", 1), ("down", 0)], stream)
    [True, True, True, True]
    >>> prequential(make_model("nb", 0.5), [], stream, given=[None] * 4, delay_events=1)
    [False, False, False, False]
    """
    for text, label in warmup:
        model.learn_one(text, label)  # type: ignore[attr-defined]
    labels = given if given is not None else [label for _, label in stream]
    delay = delay_events if given is not None else 0
    hits = []
    for i, (text, label) in enumerate(stream):
        predicted = model.predict_one(text)  # type: ignore[attr-defined]
        hits.append(predicted == label)
        arrived = i - delay  # the event whose feedback arrives now
        if arrived >= 0 and labels[arrived] is not None:
            model.learn_one(stream[arrived][0], labels[arrived])  # type: ignore[attr-defined]
    return hits
