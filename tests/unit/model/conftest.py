"""A hand-made two-split model whose predictions can be worked out on paper."""

from __future__ import annotations

import pytest

from sf311.model.scorer import Scorer
from tests.support.models import paper_scorer as build_paper_scorer


@pytest.fixture
def paper_scorer() -> Scorer:
    """service_name A -> 2.0; otherwise hour <= 12 -> 3.0, else 4.0 (log1p hours)."""
    return build_paper_scorer(["A", "B"], groups={"A": [-0.5, 0.1, 0.5]})
