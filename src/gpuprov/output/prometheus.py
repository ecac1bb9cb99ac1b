"""Prometheus text for node_exporter's textfile collector, written by
prometheus_client (drift-check's and status's `--format prometheus`).

Each format builds its own CollectorRegistry (never the process-wide default
one, which would carry the previous refresh's samples and client metrics).
The text is generate_latest's; `-o FILE` writes it with write_text_atomic
rather than write_to_textfile, which takes the umask's mode and does not
fsync: --report-mode decides who may read the file, as for every report.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Gauge, generate_latest


def gauge(registry: CollectorRegistry, name: str, help_text: str,
          samples: Iterable[tuple[Sequence[str], float | None]],
          labels: Sequence[str] = ()) -> None:
    """A gauge family of `samples` ((label values, value)); a None value is no
    sample: what a host could not answer is absent, never a false 0."""
    family = Gauge(name, help_text, list(labels), registry=registry)
    for values, value in samples:
        if value is None:
            continue
        (family.labels(*values) if labels else family).set(float(value))


def text(registry: CollectorRegistry) -> str:
    return str(generate_latest(registry).decode("utf-8"))
