"""A deep classifier version split in two for explanations (``GetDeepExplainer``).

Grad-CAM needs the last feature map and the gradient of a logit with respect to it. The
exported ``model.pt`` is a trace of the whole network (pixels -> probabilities), whose inner
tensors are out of reach, so the eager network is rebuilt from the trace's state_dict (its
parameter names are the eager module's) and traced again as two methods: ``forward`` (pixels ->
feature map) and ``head`` (feature map -> logits). Works on every exported version, old ones
included; the mirror-image averaging of ``average_horizontal_flips`` is left out (the map
explains the image as given)."""

from __future__ import annotations

import io
from typing import Any

import torch
from torch import nn

from firstlight.errors import FailedPrecondition
from firstlight.training.deep.classifier import EfficientNetClassifier, ResNetScratch


class _Split(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        if isinstance(net, EfficientNetClassifier):
            return net.backbone.extract_features(net.norm(x))
        return net.body(net.stem(net.norm(x)))

    def head(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.net.head(fmap.mean(dim=(2, 3)))  # eval: the dropout before it is the identity


def rebuild_net(state: dict[str, torch.Tensor]) -> nn.Module:
    """The eager classifier network of an exported ``ClassifierExport`` trace's state_dict (its
    architecture read from the parameter names, its class count from the head's shape)."""
    sub = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}
    if "head.weight" not in sub:
        raise FailedPrecondition("the exported module is not a classifier network (no net.head)")
    k = int(sub["head.weight"].shape[0])
    net: nn.Module
    if any(n.startswith("backbone.") for n in sub):
        net = EfficientNetClassifier(k, pretrained=False)  # weights come from the state_dict
    elif any(n.startswith("stem.") for n in sub):
        widths = tuple(int(sub[f"body.{i}.conv1.weight"].shape[0]) for i in (0, 2, 4))
        net = ResNetScratch(k, widths)  # type: ignore[arg-type]
    else:
        raise FailedPrecondition("the exported classifier's architecture is not one this service knows")
    net.load_state_dict(sub, strict=True)
    return net.eval()


def explainer_bytes(exported: Any, image_size: int) -> bytes:
    """TorchScript bytes of the split of an exported classifier trace (``forward``, ``head``)."""
    split = _Split(rebuild_net(dict(exported.state_dict()))).eval()
    x = torch.randint(0, 256, (1, image_size, image_size, 3), dtype=torch.uint8)
    with torch.no_grad():
        fmap = split(x)
        traced = torch.jit.trace_module(split, {"forward": x, "head": fmap}, check_trace=False)
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    return buf.getvalue()
