from __future__ import annotations

from collections.abc import Iterator

import pytest

from holdfast.testing import FakeOpenAIServer


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv
