"""Message types shared by the interop tests and their child programs (a standard AutoGen worker).

The wire names a dataclass by its class name, so both sides agree without sharing code at run time;
sharing the module only keeps the two definitions from drifting apart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Ask:
    text: str


@dataclass
class Answer:
    text: str


@dataclass
class News:
    text: str


@dataclass
class Boom:
    """A standard agent raises ValueError on it."""

    text: str


@dataclass
class Nothing:
    """A handler answers it with None."""

    text: str


@dataclass
class Hang:
    """A handler never answers it."""

    text: str


NEWS_TOPIC = "news"
