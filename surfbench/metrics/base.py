"""Metric metadata: each metric is declared once, here, with its direction.

Every metric module (``image.py``, the audio metrics, ...) calls
:func:`register_metric` at import time; tables, leaderboards and result
schemas read :data:`METRICS` and never keep a list of their own.

``kind``:

* ``"item"``: one value per separated item (image, utterance); a table shows
  the mean over items.
* ``"set"``: one value for a whole evaluation set (FID, IS, KID).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricKind = Literal["item", "set"]
_KINDS = ("item", "set")


@dataclass(frozen=True)
class MetricInfo:
    """What a metric is called and which way is better."""

    name: str  #: key used in results files, e.g. ``"psnr"``
    display: str  #: label for tables, e.g. ``"PSNR"``
    higher_is_better: bool
    kind: MetricKind
    unit: str = ""  #: e.g. ``"dB"``; empty when unitless

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum() or self.name != self.name.lower():
            raise ValueError(f"MetricInfo.name must be a lower-case identifier, got {self.name!r}")
        if self.kind not in _KINDS:
            raise ValueError(f"MetricInfo.kind must be one of {_KINDS}, got {self.kind!r}")

    @property
    def arrow(self) -> str:
        """``"↑"`` or ``"↓"``, for table headers."""
        return "\u2191" if self.higher_is_better else "\u2193"


#: The single registry of metrics, name -> info.
METRICS: dict[str, MetricInfo] = {}


def register_metric(info: MetricInfo) -> MetricInfo:
    """Add ``info`` to :data:`METRICS`.

    Registering the same declaration twice (a module re-imported) is a no-op;
    registering a *different* declaration under a name already taken is an
    error, so two modules can never disagree about a metric.
    """
    if not isinstance(info, MetricInfo):
        raise TypeError(f"register_metric expects a MetricInfo, got {type(info).__name__}")
    old = METRICS.get(info.name)
    if old is not None and old != info:
        raise ValueError(f"metric {info.name!r} already registered as {old}; refusing {info}")
    METRICS[info.name] = info
    return info


def get_metric(name: str) -> MetricInfo:
    """The declaration of ``name``; a KeyError naming the close matches otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, METRICS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown metric {name!r}{hint} (known: {', '.join(sorted(METRICS))})") from None


class MetricUnavailable(Exception):
    """A metric cannot be computed here (typically: its network weights are absent).

    ``reason`` is a human-readable sentence saying what is missing and how to
    fix it; pipelines record it in place of the value instead of failing.
    """

    def __init__(self, reason: str, metric: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.metric = metric

    def __repr__(self) -> str:  # shows in results dicts
        return f"MetricUnavailable({self.reason!r})"
