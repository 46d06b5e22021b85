"""Every template runner the training core is built with: heads on stored embeddings, and the
deep torch templates. The process (:mod:`firstlight.training.main`) and the unit tests share it."""

from __future__ import annotations

from firstlight.training.deep.jobs import DeepRunner
from firstlight.training.head_jobs import HeadRunner
from firstlight.training.ports import ModelRepository, Peers, TemplateRunner


def runners(peers: Peers, repository: ModelRepository) -> list[TemplateRunner]:
    return [HeadRunner(peers, repository), DeepRunner(peers, repository)]
