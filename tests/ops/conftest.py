"""Order of the run: the container test first."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``container`` (tests/ops/test_container.py: a base image, an image build and three nodes, minutes
    in all) go first, the others keep their order: under pytest-xdist the container test then runs beside the rest of
    the suite on one worker, instead of starting near the end and lengthening the run by its own duration."""
    first = [item for item in items if item.get_closest_marker("container") is not None]
    if first:
        items[:] = first + [item for item in items if item.get_closest_marker("container") is None]
