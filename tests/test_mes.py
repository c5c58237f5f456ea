import math

import pytest

import latvit
from latvit.analysis import MesTerm, mes


def test_mes_default_terms_hand_computed():
    # 100 * (3.5)^-0.5 * (0.9)^-0.5
    assert mes({"params": 3.5e6, "latency_ms": 0.9}) == pytest.approx(100 / math.sqrt(3.5 * 0.9))


def test_mes_custom_terms_and_score():
    terms = {"params": MesTerm(2e6, -1.0), "latency_ms": MesTerm(4.0, -0.25)}
    # 50 * (6/2)^-1 * (16/4)^-0.25 = 50 / 3 / sqrt(2)
    assert mes({"params": 6e6, "latency_ms": 16.0, "ignored": 1}, terms, score=50) == pytest.approx(
        50 / 3 / math.sqrt(2)
    )


def test_smaller_and_faster_scores_higher():
    assert (
        mes({"params": 3e6, "latency_ms": 1.0})
        > mes({"params": 6e6, "latency_ms": 1.0})
        > mes({"params": 6e6, "latency_ms": 2.0})
    )


@pytest.mark.parametrize(
    "metrics, message",
    [
        ({"params": 1e6}, "needs the metric 'latency_ms'"),
        ({"params": 1e6, "latency_ms": 0}, "must be a positive number"),
    ],
)
def test_mes_bad_metrics(metrics, message):
    with pytest.raises(latvit.LatvitError, match=message):
        mes(metrics)
