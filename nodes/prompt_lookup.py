"""Prompt lookup (n-gram copy) drafting, used with a model draft (`models.lookup_ngram`): the next draft token is the
one that followed the most recent earlier occurrence of the context's last n tokens (prompt and output so far);
where there is none the draft model proposes. Small LLMs copy names, code and whole sentences from their prompt
and repeat themselves, which a tiny draft model predicts poorly and a copy predicts almost free (Saxena, "Prompt
Lookup Decoding", 2023; Yang et al., "Inference with Reference", 2023). One function, used by the live draft
(nodes/backends/hf.py) and by the acceptance recording (testbed/calibrate/record.py)."""

from __future__ import annotations


def lookup_next(tokens: list[int], n: int) -> int | None:
    """The token after the most recent earlier occurrence of tokens[-n:] (None: no such occurrence, or n < 1)."""
    L = len(tokens)
    if n < 1 or L <= n:
        return None
    key = tokens[L - n :]
    first = key[0]
    for j in range(L - n - 1, -1, -1):  # start j of an earlier occurrence; it is followed by tokens[j + n]
        if tokens[j] == first and tokens[j : j + n] == key:
            return tokens[j + n]
    return None
