import numpy as np
import pytest

from firstlight.models.backbone import general_concept_names
from firstlight.models.text_encoder import TEXT_EMBEDDING_DIM, TextEncoder


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder()


def test_shape_dtype_and_unit_norm(encoder: TextEncoder) -> None:
    v = encoder.encode(["a photo of a cat", "", "x" * 5000])  # empty and over-long inputs too
    assert v.shape == (3, TEXT_EMBEDDING_DIM) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, TEXT_EMBEDDING_DIM)


def test_matches_sentence_transformers_reference(encoder: TextEncoder) -> None:
    # Similarities printed by the sentence-transformers README for all-MiniLM-L6-v2.
    v = encoder.encode(["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."])
    sims = v @ v.T
    np.testing.assert_allclose([sims[0, 1], sims[0, 2], sims[1, 2]], [0.6660, 0.1046, 0.1411], atol=2e-3)


def test_padding_does_not_change_embeddings(encoder: TextEncoder) -> None:
    texts = ["cat", "a much longer sentence about a small grey kitten sleeping on a sofa", "truck"]
    together = encoder.encode(texts)
    alone = np.concatenate([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_semantic_similarity(encoder: TextEncoder) -> None:
    cat, kitten, truck = encoder.encode(["a photo of a cat", "a kitten", "a truck"])
    assert cat @ kitten > cat @ truck + 0.2


def test_elephant_is_closest_to_imagenet_elephants(encoder: TextEncoder) -> None:
    names = general_concept_names()
    sims = encoder.encode(names) @ encoder.encode(["elephant"])[0]
    best = names[int(np.argmax(sims))]
    elephants = {names[101], names[385], names[386]}  # tusker, Indian/Asian, African elephant
    assert best in elephants, best
