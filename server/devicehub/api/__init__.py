"""The transport: gRPC servicers, interceptors, proto converters, REST-edge conventions
and the WebSocket bridge."""
