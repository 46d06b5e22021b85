"""The HTTP/JSON API (``/v1``) and the Portal: a client of the gRPC services (through
:mod:`firstlight.clients`) that passes each caller's API key through, holds no state of its
own beyond signed session cookies, and scales out behind an Ingress. ``main.py`` is the process."""
