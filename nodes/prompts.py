"""Prompts for the `hf` backend: traces carry only lengths, so `PromptSource` builds real prompts of exactly
the requested number of tokens: a chat turn (the tokenizer's chat template, when it has one) whose user
message is an excerpt of the Python documentation shipped with every CPython (`pydoc_data.topics`, ~465 k
characters of English technical prose), cut at a deterministic, request-dependent offset and tokenised with
the model's tokenizer.
"""

from __future__ import annotations

_CORPUS: str | None = None


def corpus_text() -> str:
    global _CORPUS
    if _CORPUS is None:
        import pydoc_data.topics as topics

        _CORPUS = "\n\n".join(topics.topics[k] for k in sorted(topics.topics))
    return _CORPUS


class PromptSource:
    """Real prompts of an exact token length for length-only traces (see the module docstring)."""

    INSTRUCTION = "Explain the following excerpt from the Python documentation in your own words.\n\n"

    def __init__(self, tokenizer):
        self.tok = tokenizer
        enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        self.corpus = enc(corpus_text())
        self.prefix: list[int] = []
        self.suffix: list[int] = []
        if getattr(tokenizer, "chat_template", None):
            marker = "\x00MARK\x00"
            s = tokenizer.apply_chat_template(
                [{"role": "user", "content": self.INSTRUCTION + marker}], add_generation_prompt=True, tokenize=False
            )
            head, _, tail = s.partition(marker)
            self.prefix, self.suffix = enc(head), enc(tail)
        else:
            self.prefix = enc(self.INSTRUCTION)

    def start(self, rid: int) -> int:
        return (rid * 104729) % len(self.corpus)

    def tokens(self, rid: int, n: int) -> list[int]:
        """n token ids: chat prefix + documentation excerpt + the turn's end (shorter prompts keep its end)."""
        if n <= 0:
            return []
        body = n - len(self.prefix) - len(self.suffix)
        c = self.corpus
        start = self.start(rid)
        if body <= 0:
            return (self.prefix + self.suffix)[-n:]
        reps = -(-(start + body) // len(c))
        excerpt = (c * reps)[start : start + body] if reps > 1 else c[start : start + body]
        return self.prefix + excerpt + self.suffix
