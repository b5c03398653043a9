"""Fixtures of the console tests: the gateway tests' real `serve` processes, reused."""

from tests.gateway.conftest import api, gateway, gateway_settings, start_gateway

__all__ = ["api", "gateway", "gateway_settings", "start_gateway"]
