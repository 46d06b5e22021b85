"""EmbeddingService gRPC servicer."""

from __future__ import annotations

import asyncio

import grpc

from firstlight.domain import validation
from firstlight.embedding.core import Embedder
from firstlight.errors import InvalidArgument
from firstlight.runtime.status import map_errors
from firstlight.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc


@map_errors
class EmbeddingServicer(embedding_pb2_grpc.EmbeddingServiceServicer):
    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    # The model a client names is resolved within the request's app (the interceptor checked the
    # caller may reach it; an app key's empty app_id is its own app): clients never name Triton
    # models, so no request reaches another app's model.
    async def EmbedImages(self, request, context):  # type: ignore[no-untyped-def]
        model = validation.app_embedding_model(request.app_id, request.model)
        vectors = await asyncio.to_thread(self.embedder.embed_images, list(request.images), model)
        return embedding_pb2.EmbedImagesResponse(
            embeddings=[embedding_pb2.Embedding(vector=v.tolist()) for v in vectors],
            model=validation.public_embedding_model(request.app_id, self.embedder.model_name(model)),
        )

    async def DescribeEmbeddingModel(self, request, context):  # type: ignore[no-untyped-def]
        model = validation.app_embedding_model(request.app_id, request.model)
        dim, size = await asyncio.to_thread(self.embedder.describe, model)
        return embedding_pb2.EmbeddingModelInfo(model=request.model, dim=dim, image_size=size)

    async def EmbedTexts(self, request, context):  # type: ignore[no-untyped-def]
        if request.space not in (
            embedding_pb2.TEXT_SPACE_UNSPECIFIED,
            embedding_pb2.TEXT_SPACE_TEXT,
            embedding_pb2.TEXT_SPACE_IMAGE,
        ):
            raise InvalidArgument(f"unknown text space {request.space}")
        image_space = request.space == embedding_pb2.TEXT_SPACE_IMAGE
        result = await asyncio.to_thread(self.embedder.embed_texts, list(request.texts), image_space)
        return embedding_pb2.EmbedTextsResponse(
            embeddings=[embedding_pb2.Embedding(vector=v.tolist()) for v in result.vectors],
            model=self.embedder.model_name() if image_space else self.embedder.text_model_name,
            interpretations=[
                embedding_pb2.TextInterpretation(concepts=[common_pb2.ScoredConcept(name=m.name, score=m.weight) for m in matches])
                for matches in result.interpretations
            ],
        )


def add_to_server(servicer: EmbeddingServicer, server: grpc.aio.Server) -> list[str]:
    embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(servicer, server)
    return [embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name]
