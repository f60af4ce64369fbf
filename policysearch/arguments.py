"""Argument types the commands share, so that a value that is not a number reads alike on every command."""

from __future__ import annotations

import argparse

__all__ = ["decimal_number", "whole_number"]


def whole_number(text: str) -> int:
    """An integer option's value; anything else is argparse's usage error ``expected a whole number``."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def decimal_number(text: str) -> float:
    """A float option's value (range checks come later, with the setting's name)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
