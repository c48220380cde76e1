"""Checks of user input shared by the configuration classes, the CLI and the readers of results:
one message shape for a value of the wrong kind, and for a name that is not among the choices."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable
from typing import Any


class Problems(ValueError):
    """Several problems of one input, found in one pass, each a message of its own (``messages``),
    so that a reader mends them all at once rather than one per attempt."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = list(messages)
        count = len(self.messages)
        super().__init__(f"{count} problem{'s' * (count != 1)}: {' | '.join(self.messages)}")

    def __reduce__(self) -> tuple:  # rebuilt from the messages, not from the joined text (copy, pickle)
        return Problems, (self.messages,)


def problems_error(messages: list[str]) -> ValueError:
    """The error of one or more ``messages``: a ``ValueError`` for one, ``Problems`` for more."""
    return Problems(messages) if len(messages) > 1 else ValueError(messages[0])


def raise_problems(messages: list[str]) -> None:
    """Nothing for no message, else ``problems_error``."""
    if messages:
        raise problems_error(messages)


def messages(error: ValueError) -> list[str]:
    """The messages of ``error``: a ``Problems``' each, else its one."""
    return error.messages if isinstance(error, Problems) else [str(error)]


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, for a one-line error or warning; its type's name when it has
    none (a bare ``assert``)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the one of ``names`` closest to a mistyped ``name``, or ""."""
    names = list(names)
    # The one it is in other case (SMOKE; none where several are: Study, STUDY), else the one that it
    # begins (vq-vae/1/single for vq-vae/1/single/gaussian/a=40), else the closest at 0.8, not
    # difflib's 0.6: 'gpu' is no typo of 'cpu', nor '12' of '2'
    cased = [n for n in names if isinstance(n, str) and n.casefold() == name.casefold()]
    begun = [n for n in names if isinstance(n, str) and n.startswith(name)] if name else []
    if len(cased) > 1:
        return ""
    close = cased or (begun if len(begun) == 1 else difflib.get_close_matches(name, names, n=1, cutoff=0.8))
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_choice(kind: str, value: object, choices: Iterable[object], more: str = "") -> None:
    """``ValueError`` "unknown KIND 'value' (did you mean …?); choose one of: a, b" unless ``value``
    is one of ``choices``; ``more`` goes after the list (e.g. ", cuda:N" for a pattern also taken)."""
    choices = list(choices)
    if value not in choices:
        names = [str(c) for c in choices]
        hint = did_you_mean(value, names) if isinstance(value, str) else ""
        raise ValueError(f"unknown {kind} {value!r}{hint}; choose one of: {', '.join(names)}{more}")


def check_kind(name: str, value: object, kind: type | tuple[type, ...], what: str) -> None:
    """A one-line ``ValueError`` when ``value`` is not of ``kind`` (``what`` it must be); a bool
    is not a number, though Python counts it as an int: it passes only where ``kind`` is bool."""
    wants_bool = bool in (kind if isinstance(kind, tuple) else (kind,))
    if (isinstance(value, bool) and not wants_bool) or not isinstance(value, kind):
        raise ValueError(f"{name} must be {what}, got {value!r}")


def problems_of(check: Callable[..., object], *args: object) -> list[str]:
    """The messages of the ``ValueError`` that ``check(*args)`` raises; none when it passes."""
    try:
        check(*args)
    except ValueError as err:
        return messages(err)
    return []


# A field's kind, what it must be (for ``check_kind``), and its value's own checks: the messages of
# a value of that kind (none when it is right).
FieldChecks = dict[str, tuple[type | tuple[type, ...], str, Callable[[Any], list[str]]]]


def field_problems(instance: object, checks: FieldChecks, flag: bool = False) -> tuple[list[str], set[str]]:
    """The problems of ``instance``'s fields in ``checks``' order, and the fields that have any; with
    ``flag``, each said of its field's flag (``flagged``: the fields are a command's options). A
    value of the wrong kind has that one: its own checks would only repeat it, or fail on it."""
    problems, bad = [], set()
    for name, (kind, what, own) in checks.items():
        value = getattr(instance, name)
        found = problems_of(check_kind, name, value, kind, what) or own(value)
        problems += [flagged(message, name) for message in found] if flag else found
        if found:
            bad.add(name)
    return problems, bad


def flagged(message: str, key: str) -> str:
    """``message`` about field ``key`` said of its flag: "--folds must be …" for "folds must be …", as it
    is where it names the flag already, else "--device: unknown device …"."""
    flag = f"--{key.replace('_', '-')}"
    first, _, rest = message.partition(" ")
    return f"{flag} {rest}" if first in (key, flag) else f"{flag}: {message}"


def said_of_flags(error: ValueError, names: Collection[str]) -> ValueError:
    """``error`` of a library function said to the command line user: each message that begins with
    one of the argument ``names`` said of the flag of that name (``flagged``), the others as they are."""
    def said(message: str) -> str:
        name = message.split(" ", 1)[0]
        return flagged(message, name) if name in names else message

    return error if all(said(m) == m for m in messages(error)) else problems_error(list(map(said, messages(error))))
