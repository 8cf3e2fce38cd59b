"""gRPC servicers: read the request, call the domain module, build the response."""
