"""Issue 15: the SDK raises the one error hierarchy (firstlight.errors) with the gRPC code, the
service's message and the ``"<CODE>: <message>"`` text, and the CLI presents every such error
the same way (one red line, exit 1; usage errors exit 2). No servers: fake stubs and a fake client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from typer.testing import CliRunner

from firstlight import errors
from firstlight.cli import app
from firstlight.cli import options as cli_options
from firstlight.clients.policy import NO_RETRY
from firstlight.sdk import Firstlight, FirstlightError, error_for
from firstlight.sdk.transport import RetryingStub
from firstlight.v1 import common_pb2, ingestion_pb2

runner = CliRunner()


class Refused(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[()]:
        return ()


class FakeIngestion:
    """GetApp refuses; ListInputs answers one page, then refuses the next."""

    def GetApp(self, request: Any, **_: Any) -> Any:
        raise Refused(grpc.StatusCode.NOT_FOUND, f"app {request.id!r} not found")

    def ListInputs(self, request: Any, **_: Any) -> ingestion_pb2.ListInputsResponse:
        if request.page_token:
            raise Refused(grpc.StatusCode.UNAVAILABLE, "ingestion is restarting")
        return ingestion_pb2.ListInputsResponse(inputs=[common_pb2.Input(id="a")], next_page_token="next")


@pytest.fixture
def sdk() -> Firstlight:
    client = Firstlight("127.0.0.1:1", "127.0.0.1:1", "127.0.0.1:1", retry=NO_RETRY)  # channels connect lazily: never here
    client.ingestion = RetryingStub(FakeIngestion(), NO_RETRY)
    return client


def test_sdk_raises_the_domain_error_with_code_and_message(sdk: Firstlight) -> None:
    assert FirstlightError is errors.FirstlightError  # the SDK's old name is the hierarchy's base
    with pytest.raises(errors.NotFound, match=r"^NOT_FOUND: app 'pets' not found$") as raised:
        sdk.wait_embedding_model("pets")
    assert vars(raised.value) == {"code": grpc.StatusCode.NOT_FOUND, "message": "app 'pets' not found", "retry_after_s": None}


def test_a_generator_call_maps_errors_raised_while_it_is_iterated(sdk: Firstlight) -> None:
    pages = sdk.list_inputs("pets")
    assert next(pages).id == "a"
    with pytest.raises(errors.Unavailable, match="UNAVAILABLE: ingestion is restarting"):
        next(pages)


def test_error_for_codes_without_a_domain_error() -> None:
    cancelled = error_for(grpc.StatusCode.CANCELLED, "training job j1 was cancelled")
    assert isinstance(cancelled, FirstlightError) and not isinstance(cancelled, errors.FailedPrecondition)
    assert str(cancelled) == "CANCELLED: training job j1 was cancelled" and vars(cancelled)["code"] == grpc.StatusCode.CANCELLED


class FakeClient:
    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def search_by_text(self, app_id: str, text: str, **_: Any) -> Any:
        raise error_for(grpc.StatusCode.NOT_FOUND, f"app {app_id!r} not found [no such app]")


def test_cli_presents_a_domain_error_as_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_options.Firstlight, "from_stack", lambda data_dir: FakeClient())
    result = runner.invoke(app, ["search-text", "pets", "cat"])
    assert result.exit_code == 1, result.output
    # Brackets in a service's message are text, not rich markup.
    assert result.output.strip() == "NOT_FOUND: app 'pets' not found [no such app]"


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["search-text", "pets", "cat", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 2 and "firstlight up" in " ".join(result.output.split()), result.output
    result = runner.invoke(app, ["search-image", "pets", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "give exactly one of --file or --input-id" in result.output
    result = runner.invoke(app, ["train", "pets", "m", "--dataset", "d", "--set", "no-equals", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "--set takes key=value" in result.output
