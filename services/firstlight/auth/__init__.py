"""API keys per app: key format and digests, who may call what, and which apps a request
touches (pure); the key table (store.py) and the AuthService (servicer.py). The gRPC
interceptor that enforces it on every service is ``firstlight.hosting.auth``."""
