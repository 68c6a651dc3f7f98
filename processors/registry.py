"""Processors registered by versioned names, as spaCy and spacy-llm do.

A new implementation gets a new name (`loopline.Student.v2`) instead of changing what an
old name builds, so configs that name a version keep meaning the same thing.
"""

from __future__ import annotations

import catalogue

from loopline.schemas import ConfigError

processors = catalogue.create("loopline", "processors", entry_points=True)


def make(name: str, **kwargs):
    """Build the processor registered as `name` with typed keyword arguments."""
    try:
        factory = processors.get(name)
    except catalogue.RegistryError:
        known = ", ".join(sorted(processors.get_all())) or "none"
        raise ConfigError(f"no processor named {name!r}; registered: {known}") from None
    return factory(**kwargs)
