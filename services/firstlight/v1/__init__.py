"""Generated from protos/firstlight/v1 by `make protos`. Do not edit."""
