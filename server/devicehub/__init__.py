"""devicehub: device-management backend (gRPC services behind an Envoy REST edge)."""
