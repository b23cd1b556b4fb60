"""Teacher label quality (chapter 08): does a classifier trained on the *full* training split agree with the
label the teacher gave each new example?

LLM2LLM keeps a teacher's example when it is well-formed and new; nothing checks that the text really has the
label the teacher wrote next to it. :func:`label_agreement` measures that afterwards with an *oracle*: TF-IDF
word 1–2-grams and a logistic regression (scikit-learn) fitted on every training example of the data set (the
student sees ~1 % of them). It is a diagnostic, not a filter: the loop reports the share, it never drops an
example for it. The oracle's own accuracy on the test split is reported beside it, so a reader can tell how
much an agreement of, say, 0.7 means. CaseHOLD (multiple choice) has no such oracle here.
"""
from __future__ import annotations

from typing import Sequence

#: fitted oracles by data set (fitting SST-2's 60,614 phrases takes a few seconds; do it once per process)
_ORACLES: dict[tuple, "LabelOracle"] = {}


class LabelOracle:
    """TF-IDF + logistic regression fitted on all of ``task``'s training split."""

    def __init__(self, task):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        train = task.load("train")
        self.n_train = len(train)
        self.model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                                   LogisticRegression(max_iter=2000, C=10.0))
        self.model.fit([r["text"] for r in train], [r["label"] for r in train])
        test = task.load("test")
        self.n_test = len(test)
        self.test_accuracy = round(sum(p == r["label"] for p, r in zip(self.predict(test), test)) / max(1, len(test)), 4)

    def predict(self, records: Sequence[dict]) -> list[str]:
        return [str(label) for label in self.model.predict([r["text"] for r in records])] if records else []


def oracle_for(task) -> LabelOracle | None:
    """The (cached) oracle of ``task``; ``None`` for multiple-choice tasks."""
    if getattr(task, "multiple_choice", False):
        return None
    import os

    key = (task.name, os.environ.get("HELPERS_DATA_DIR"))
    if key not in _ORACLES:
        _ORACLES[key] = LabelOracle(task)
    return _ORACLES[key]


def label_agreement(task, records: Sequence[dict]) -> dict | None:
    """``{"n", "agree", "agreement", "oracle", "oracle_test_accuracy"}`` for the teacher's new ``records``
    (``agreement`` is ``None`` when there are none), or ``None`` where no oracle exists."""
    oracle = oracle_for(task)
    if oracle is None:
        return None
    predicted = oracle.predict(records)
    agree = sum(p == r["label"] for p, r in zip(predicted, records))
    return {"n": len(records), "agree": agree, "agreement": round(agree / len(records), 4) if records else None,
            "oracle": f"TF-IDF 1-2-grams + logistic regression on the full training split ({oracle.n_train})",
            "oracle_test_accuracy": oracle.test_accuracy}
