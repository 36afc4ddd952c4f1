"""The run tables' row builders (testbed/tables.py has the columns): one per table, keyword arguments named after the
columns, a tuple in column order. Their own module so the simulator's compiled core (testbed/compiled.py) can
include them: the nodes call one per round and per batch."""

from __future__ import annotations


# Row builders: every executor builds its rows through these, by column name (their parameters are the
# columns, in order; a test checks it), so no site depends on the column order.
def request_row(
    *,
    request_id: int,
    edge: str | int,
    target: str | int,
    arrival_s: float,
    prefill_sent_s: float,
    first_token_s: float,
    finish_s: float,
    prompt_tokens: int,
    output_tokens: int,
    tokens_out: int,
    rounds: int,
    drafted_tokens: int,
    accepted_tokens: int,
    status: str,
) -> tuple:
    return (
        request_id,
        edge,
        target,
        arrival_s,
        prefill_sent_s,
        first_token_s,
        finish_s,
        prompt_tokens,
        output_tokens,
        tokens_out,
        rounds,
        drafted_tokens,
        accepted_tokens,
        status,
    )


def round_row(
    *,
    request_id: int,
    round: int,
    edge: str | int,
    target: str | int,
    produced: int,
    gamma: int,
    accepted: int,
    draft_start_s: float,
    send_s: float,
    target_recv_s: float,
    batch_start_s: float,
    batch_end_s: float,
    recv_s: float,
    batch_size: int,
    queue_depth: int,
) -> tuple:
    """(gained = accepted + 1 is derived.)"""
    return (
        request_id,
        round,
        edge,
        target,
        produced,
        gamma,
        accepted,
        accepted + 1,
        draft_start_s,
        send_s,
        target_recv_s,
        batch_start_s,
        batch_end_s,
        recv_s,
        batch_size,
        queue_depth,
    )


def batch_row(*, target: str | int, kind: str | int, start_s: float, end_s: float, size: int, tokens: int) -> tuple:
    return (target, kind, start_s, end_s, size, tokens)


def unstarted_request_row(
    request_id: int, edge: str, arrival_s: float, prompt_tokens: int, output_tokens: int, status: str
) -> tuple:
    """A request that never started (not arrived before the end, or its draft left no table)."""
    nan = float("nan")
    return request_row(
        request_id=request_id,
        edge=edge,
        target="",
        arrival_s=arrival_s,
        prefill_sent_s=nan,
        first_token_s=nan,
        finish_s=nan,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        tokens_out=0,
        rounds=0,
        drafted_tokens=0,
        accepted_tokens=0,
        status=status,
    )
