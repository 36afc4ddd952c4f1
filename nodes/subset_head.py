"""An LM head over some token ids only: a distilled draft's (testbed/distill.py), applied by nodes.models.load_model
when the model directory's recipe names a head vocabulary. The logits of every other token are -inf, so argmax,
softmax and top-k never pick them, and the head costs len(ids) / vocab_size of the full one (on a CPU the full
head over SmolLM2's 49,152 tokens is most of a small draft's per-token time)."""

from __future__ import annotations

import torch

from nodes.rowgemm import linear_t


class SubsetHead(torch.nn.Module):
    def __init__(self, weight: torch.Tensor, ids: torch.Tensor, vocab_size: int):
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)  # (len(ids), hidden)
        self.register_buffer("ids", ids, persistent=False)
        self.vocab_size = vocab_size

    @classmethod
    def of(cls, model, ids: list[int]) -> SubsetHead:
        idx = torch.as_tensor(ids, dtype=torch.long)
        if int(idx.max()) >= model.config.vocab_size:
            raise ValueError(f"head vocabulary id {int(idx.max())} >= vocab size {model.config.vocab_size}")
        w = model.get_output_embeddings().weight.detach()[idx].clone()
        return cls(w, idx, model.config.vocab_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        sub = linear_t(h, self.weight)  # the row kernel where it applies (nodes/rowgemm.py)
        out = torch.full((*h.shape[:-1], self.vocab_size), float("-inf"), dtype=sub.dtype)
        out[..., self.ids] = sub
        return out
