"""ooc's version: what a manifest's ``created_by`` and ``ooc --version`` say (pyproject.toml keeps the same)."""

__version__ = "0.1.0"
