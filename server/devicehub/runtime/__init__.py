"""Start-up and supervision: the composition root, the server, workers, Envoy and the
command line."""
