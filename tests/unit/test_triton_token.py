"""Triton's token (docs/security.md): on tritonserver's command line by necessity (Triton 2.51 reads
restricted-protocol settings nowhere else), but never in the log line that shows the command."""

from __future__ import annotations

from firstlight.triton.server import restricted_args, shown_command


def test_the_logged_command_line_hides_the_token() -> None:
    token = "flt_secret-token"
    cmd = ["tritonserver", "--grpc-address=127.0.0.1", *restricted_args(token)]
    assert sum(token in arg for arg in cmd) == 2  # gRPC and HTTP
    shown = shown_command(cmd, token)
    assert token not in shown and shown.count("<token>") == 2 and "--grpc-address=127.0.0.1" in shown
    assert shown_command(["tritonserver"], "") == "tritonserver"
