"""Latency histograms (HdrHistogram, microseconds, 3 significant digits), their
merge across load-generator processes, and the percentiles the report gives."""

from __future__ import annotations

from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 120_000_000  # two minutes: a slower answer is recorded as two minutes
SIGNIFICANT_DIGITS = 3
PERCENTILES = (("p50_ms", 50.0), ("p99_ms", 99.0), ("p99_9_ms", 99.9))


class Latencies:
    """One operation kind's latencies."""

    def __init__(self) -> None:
        self.histogram = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    def record_us(self, value_us: int) -> None:
        self.histogram.record_value(min(max(value_us, LOWEST_US), HIGHEST_US))

    @property
    def count(self) -> int:
        count: int = self.histogram.get_total_count()
        return count

    def encode(self) -> bytes:
        """A compact form to carry between processes (HdrHistogram's own encoding)."""
        encoded: bytes = self.histogram.encode()
        return encoded

    def merge(self, other: Latencies) -> None:
        self.histogram.add(other.histogram)

    def merge_encoded(self, encoded: bytes) -> None:
        self.histogram.add(HdrHistogram.decode(encoded))

    @classmethod
    def decode(cls, encoded: bytes) -> Latencies:
        latencies = cls()
        latencies.merge_encoded(encoded)
        return latencies

    def percentile_ms(self, percentile: float) -> float:
        value_us: int = self.histogram.get_value_at_percentile(percentile)
        return round(value_us / 1000.0, 3)

    def summary(self) -> dict[str, Any]:
        """count, mean, the percentiles and the maximum, in milliseconds."""
        if self.count == 0:
            return {"count": 0}
        summary: dict[str, Any] = {"count": self.count,
                                   "mean_ms": round(self.histogram.get_mean_value() / 1000, 3)}
        for name, percentile in PERCENTILES:
            summary[name] = self.percentile_ms(percentile)
        summary["max_ms"] = round(self.histogram.get_max_value() / 1000.0, 3)
        return summary

    def curve(self, points: int = 200) -> list[tuple[float, float]]:
        """(percentile, milliseconds) pairs for a latency plot, denser at the tail."""
        if self.count == 0:
            return []
        curve = []
        for step in range(points):
            # 0, 90, 99, 99.9, 99.99 ... spaced evenly on a log scale of 1/(1-p)
            percentile = 100.0 * (1 - 10 ** (-5.0 * step / (points - 1)))
            curve.append((round(percentile, 5), self.percentile_ms(percentile)))
        return curve
