"""Shared fixtures: real services come from tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.llm",
    "tests.fixtures.models",
    "tests.fixtures.review",
]
