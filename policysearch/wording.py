"""How a message names a setting: the command line's flags (``--train-size 50``) or the Python API's keyword
arguments (``train_size=50``). An error that names settings is a :class:`WordedError`; the command line and
``policysearch.search`` each word it their way, so a Python user never reads a flag."""

from __future__ import annotations

import os
import reprlib
from collections.abc import Sequence
from typing import Any, Callable

__all__ = ["Mention", "WordedError", "a_kind", "counted", "few", "first_line", "flag", "flag_mention", "keyword",
           "keyword_mention", "one_line", "short_repr"]

# How a message names a setting (and its value): flag_mention or keyword_mention.
Mention = Callable[..., str]

_UNSET = object()

_SHORT = reprlib.Repr()  # attributes rather than keywords: Python before 3.12 has no keywords
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 3, 60, 60, 40


def counted(n: float, word: str, plural: str | None = None) -> str:
    """``1 view``, ``2 views``, ``0.5 CPUs``, ``3 sub-policies`` (with ``plural``)."""
    shown = n if isinstance(n, int) else f"{n:g}"  # 1234567 trials, 0.5 GPUs
    return f"{shown} {word}" if n == 1 else f"{shown} {plural or word + 's'}"


def one_line(exc: BaseException) -> str:
    """An exception's whole message on one line (its lines joined by spaces; its type's name if it has none)."""
    text = str(exc).strip() or type(exc).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, cut at a word within ``limit`` characters."""
    line = (str(exc).strip().splitlines() or ["(no message)"])[0]
    return line if len(line) <= limit else line[:limit].rsplit(" ", 1)[0] + " ..."


def short_repr(value: Any) -> str:
    """A repr of at most a line or so: messages quote values of any size (a file's, a state dict given where
    a path goes)."""
    return _SHORT.repr(value)


def few(names: Sequence[str], shown: int = 3, sep: str = ", ") -> str:
    """A list for a message, cut short: ``a, b, c`` or ``a, b, c and 4 more`` (``sep="; "`` for names that
    hold commas, as recipes do)."""
    listed = sep.join(names[:shown])
    return listed if len(names) <= shown else f"{listed} and {len(names) - shown} more"


def a_kind(value: Any) -> str:
    """What a value is, with its article, for a message: ``a list``, ``an int``, ``an Image``."""
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def flag(name: str) -> str:
    """The command-line flag of a config field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def keyword(name: str) -> str:
    """The Python API's keyword argument of a config field: ``batch_size`` -> ``batch_size=``."""
    return name + "="


def flag_mention(name: str, value: Any = _UNSET) -> str:
    """A setting as the command line names it, with its value if given: ``--epochs 9``, ``--resume RUN``."""
    shown = " ".join(map(str, value)) if isinstance(value, tuple) else "''" if value == "" else value
    return flag(name) if value is _UNSET else f"{flag(name)} {shown}"


def keyword_mention(name: str, value: Any = _UNSET) -> str:
    """A setting as the Python API names it: ``epochs=9``, ``out='RUN', resume=True``, the data as ``data``."""
    if name == "resume":
        return "resume=True" if value is _UNSET else f"out={str(value)!r}, resume=True"
    if name == "dataset":
        return "data" if value is _UNSET else f"data {value}"
    if value is _UNSET:
        return keyword(name)
    if isinstance(value, os.PathLike):
        return f"{keyword(name)}{os.fspath(value)}"
    return f"{keyword(name)}{value!r}" if isinstance(value, str) else f"{keyword(name)}{short_repr(value)}"


class WordedError(ValueError):
    """An error whose message names settings: ``message`` is text, or a function of a :data:`Mention`,
    worded with the command line's flags by default and by :meth:`worded` as the Python API names them.
    Subclasses take the same two arguments."""

    def __init__(self, message: str | Callable[[Mention], str], mention: Mention | None = None) -> None:
        self.build = message if callable(message) else (lambda _: message)
        super().__init__(self.build(mention or flag_mention))

    def worded(self, mention: Mention) -> "WordedError":
        """The same error, its settings named by ``mention``."""
        return type(self)(self.build, mention)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return type(self), (str(self),)  # pickled as worded (the message function may be a lambda)
