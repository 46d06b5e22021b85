"""Process plumbing shared by the services: gRPC server shell, error mapping, logging."""
