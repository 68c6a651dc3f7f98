"""Model versions: immutable artifacts in a store, and the registry on the `models` topic."""
