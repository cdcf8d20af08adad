"""Helpers for the observability tests: scraping /metrics and reading one sample."""

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from routing.metrics import REFRESH_S

HELLO = [{"role": "user", "content": "hello router"}]


def scrape(url: str, token: str, *, wait_refresh: bool = False) -> dict:
    """{sample name: [(labels, value)]} from `url`/metrics."""
    if wait_refresh:
        time.sleep(REFRESH_S * 1.5)
    response = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    response.raise_for_status()
    samples: dict = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def metric_value(samples: dict, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there is none)."""
    return sum(value for sample_labels, value in samples.get(name, []) if labels.items() <= sample_labels.items())
