"""A user's path through the `firstlight` CLI against the running local stack: export the
bundled images as class folders, upload them (progress bars), search by text and image, predict."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from firstlight import datasets
from firstlight.cli import app

pytestmark = pytest.mark.e2e

runner = CliRunner()


def cli(stack, *args: str) -> str:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, [*args, "--data-dir", str(stack.data_dir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_user_path(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "animals"
    out = runner.invoke(app, ["export-sample", str(folder), "--per-class", "4"]).output
    assert "wrote 40 images" in out
    (folder / "not-an-image.png").write_bytes(b"this is text")
    chelsea = tmp_path / "chelsea.jpg"
    chelsea.write_bytes(datasets.sample_photo("chelsea"))

    out = cli(stack, "upload", "cli-app", str(folder))
    assert "uploaded 40 of 41 images" in out and "all searchable" in out
    assert "refused" in out and "not-an-image.png" in out and "INVALID_ARGUMENT" in out

    out = cli(stack, "search-text", "cli-app", "elephant", "--top-k", "5")
    assert "elephant" in out.lower() and "read as" in out

    first = sorted((folder / "zebra").iterdir())[0]
    out = cli(stack, "search-image", "cli-app", "--file", str(first), "--top-k", "3")
    top_row = next(line for line in out.splitlines() if line.startswith("│ 1 "))
    assert f"zebra_{first.name}" in top_row  # its own upload ranks first

    out = cli(stack, "predict", str(chelsea), "--top-k", "3")
    assert "cat" in out.lower() or "mau" in out.lower()

    assert "SERVING" in cli(stack, "status")

    # A few examples → a custom model, evaluated with a report, served for predict.
    out = cli(stack, "dataset", "cli-app", "main", "--split", "0.5,0.25,0.25", "--seed", "3")
    assert "zebra" in out and "version" in out
    concepts = [arg for c in datasets.ANIMAL_CLASSES for arg in ("--concept", c)]
    out = cli(stack, "train", "cli-app", "animals", "--dataset", "main", *concepts)
    assert "version 1 trained" in out and "serving" in out
    out = cli(stack, "evaluate", "cli-app", "animals", "--split", "test", "--out", str(tmp_path / "reports"))
    assert (tmp_path / "reports" / "animals-v1-test.png").read_bytes().startswith(b"\x89PNG")
    assert "precision" in out
    zebra = sorted((folder / "zebra").iterdir())[1]
    for _ in range(120):  # the version reaches the inference service through model.version.ready
        result = runner.invoke(app, ["predict", str(zebra), "--model", "animals", "--app", "cli-app", "--top-k", "1", "--data-dir", str(stack.data_dir)])
        if result.exit_code == 0:
            break
        __import__("time").sleep(0.5)
    assert result.exit_code == 0 and any(c in result.output for c in datasets.ANIMAL_CLASSES), result.output

    # Many examples → a deep template on the pixels, hyperparameters with --set (tiny here).
    deep = [
        "--template",
        "visual_classifier",
        "--set",
        "architecture=resnet_scratch",
        "--set",
        "image_size=32",
        "--set",
        "num_epochs=2",
        "--set",
        "batch_size=8",
    ]
    out = cli(stack, "train", "cli-app", "deep", "--dataset", "main", *concepts, *deep)
    assert "version 1 trained" in out and "test: " in out and "train_seconds" in out
    result = runner.invoke(
        app,
        [
            "train",
            "cli-app",
            "deep2",
            "--dataset",
            "main",
            *concepts,
            "--template",
            "visual_classifier",
            "--set",
            "detection_score_threshold=0.5",
            "--data-dir",
            str(stack.data_dir),
        ],
    )
    assert result.exit_code == 1 and "INVALID_ARGUMENT" in result.output and "detection_score_threshold" in result.output


def test_cli_errors_are_readable(stack) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["search-image", "cli-app", "--input-id", "nope", "--data-dir", str(stack.data_dir)])
    assert result.exit_code == 1 and "NOT_FOUND" in result.output
    result = runner.invoke(app, ["status", "--data-dir", "/nonexistent"])
    assert result.exit_code != 0


def test_cli_api_keys(stack) -> None:  # type: ignore[no-untyped-def]
    """The admin (the stack's key from stack.json) creates an app and a key; the key, given as
    FIRSTLIGHT_API_KEY, acts as that app only; a revoked key is refused."""
    cli(stack, "create-app", "cli-keys")
    out = cli(stack, "create-key", "cli-keys", "--name", "uploader")
    key = out.strip().splitlines()[-1]
    assert key.startswith("flk_")
    assert "uploader" in cli(stack, "list-keys", "cli-keys")
    as_app = {"FIRSTLIGHT_API_KEY": key}
    photo = datasets.sample_photo("coffee")
    folder = Path(stack.data_dir) / "cli-keys-upload"
    folder.mkdir(exist_ok=True)
    (folder / "coffee.jpg").write_bytes(photo)
    result = runner.invoke(app, ["upload", "cli-keys", str(folder), "--data-dir", str(stack.data_dir)], env=as_app)
    assert result.exit_code == 0 and "uploaded 1 of 1" in result.output, result.output
    result = runner.invoke(app, ["search-text", "cli-app", "zebra", "--data-dir", str(stack.data_dir)], env=as_app)
    assert result.exit_code == 1 and "PERMISSION_DENIED" in result.output
    result = runner.invoke(app, ["create-key", "cli-keys", "--data-dir", str(stack.data_dir)], env=as_app)
    assert result.exit_code == 1 and "PERMISSION_DENIED" in result.output  # only the admin issues keys
    key_id = key.split("_")[1]
    assert key_id in cli(stack, "revoke-key", "cli-keys", key_id)
    result = runner.invoke(app, ["list-keys", "cli-keys", "--data-dir", str(stack.data_dir)], env=as_app)
    assert result.exit_code == 1 and "UNAUTHENTICATED" in result.output
