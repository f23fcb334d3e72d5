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
    model: object, warmup: list[tuple[str, int]], stream: list[tuple[str, int]]
) -> list[bool]:
    """Warm up on ``warmup``, then for each event predict first and learn after; hits in order."""
    for text, label in warmup:
        model.learn_one(text, label)  # type: ignore[attr-defined]
    hits = []
    for text, label in stream:
        predicted = model.predict_one(text)  # type: ignore[attr-defined]
        hits.append(predicted == label)
        model.learn_one(text, label)  # type: ignore[attr-defined]
    return hits
