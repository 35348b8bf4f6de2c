"""The log-in rate limits' refusal, answered 429 with Retry-After by the error middleware. The
limits themselves are counted in the database (controller/login_limits.py), so that every
controller behind a load balancer counts the same attempts."""

from __future__ import annotations

from edgebed.controller.login_limits import RateLimited

__all__ = ["RateLimited"]
