"""Model families (:mod:`tinydyn.models.registry`), checkpoints, and dataset provenance."""

from tinydyn.models.registry import DEFAULT_FAMILY, FAMILIES, family_names, get_family

__all__ = ["DEFAULT_FAMILY", "FAMILIES", "family_names", "get_family"]
