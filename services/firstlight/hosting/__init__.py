"""Hosting a service process: the gRPC server shell (health, reflection, metrics, graceful stop)
and the request authenticator every service's server runs (API keys, app scoping).

It sits above the transport layers (``runtime``, ``clients``, ``messaging``) because checking a
key calls the auth service through ``clients``; the services sit above it.
"""
