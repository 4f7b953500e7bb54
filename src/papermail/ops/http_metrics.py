"""The web app's own metrics: requests by method, route template and status."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    """The web app's requests: a counter by method, route and status, a latency histogram.

    ``route`` must be the matched route's *template* ("/preferences/{token}"), never the
    path: paths carry subscribers' tokens, and one series per token would be both a leak
    and a cardinality bomb. Requests that matched no route count as "<unmatched>".
    """

    UNMATCHED = "<unmatched>"

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "papermail_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
            registry=registry,
        )
        self.duration = Histogram(
            "papermail_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ("method", "route"),
            buckets=HTTP_BUCKETS,
            registry=registry,
        )

    def observe(self, *, method: str, route: str | None, status: int, seconds: float) -> None:
        method = method if method in HTTP_METHODS else "OTHER"
        route = route or self.UNMATCHED
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)
