"""One gRPC servicer per service in proto/devicehub/v1: thin, each call handed to a
domain module."""
