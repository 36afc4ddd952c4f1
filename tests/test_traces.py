"""Tests of the trace package: formats, errors, windowing, synthetic generator, edge mapping, locating."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traces import FORMATS, Trace, TraceError, assign_edges, find_trace, generate_synthetic, load_trace

AZURE_ROWS = [
    "TIMESTAMP,ContextTokens,GeneratedTokens",
    "2023-11-16 18:15:46.6805900,374,44",
    "2023-11-16 18:15:50.9951690,396,109",
    "2023-11-16 18:15:51.2224670,879,55",
    "2023-11-16 18:15:51.3910170,91,16",
]
BURST_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"


def write(tmp_path: Path, name: str, lines: list[str]) -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def jsonl(objs: list[dict]) -> list[str]:
    return [json.dumps(o) for o in objs]


# ---- formats -----------------------------------------------------------------------------------------


def test_formats_tuple() -> None:
    assert FORMATS == ("azure", "burstgpt", "mooncake", "native", "synthetic")


def test_azure(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", AZURE_ROWS)
    tr = load_trace(path)
    assert isinstance(tr, Trace) and len(tr) == 4 and tr.source == path
    np.testing.assert_allclose(tr.arrival_s, [0.0, 4.314579, 4.541877, 4.710427], atol=1e-9)
    assert tr.prompt_tokens.tolist() == [374, 396, 879, 91] and tr.prompt_tokens.dtype == np.int32
    assert tr.output_tokens.tolist() == [44, 109, 55, 16] and tr.output_tokens.dtype == np.int32
    assert tr.request_id.tolist() == [0, 1, 2, 3] and tr.request_id.dtype == np.int64
    assert tr.arrival_s.dtype == np.float64 and tr.field is None
    assert tr.skipped_rows == 0 and tr.excluded_rows == 0
    assert load_trace(path, "azure").prompt_tokens.tolist() == tr.prompt_tokens.tolist()


def test_azure_timestamp_variants_and_unsorted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.csv",
        [
            "TIMESTAMP,ContextTokens,GeneratedTokens",
            "2024-05-10 00:00:01.500000,10,1",  # 6 digits
            "2024-05-10 00:00:00,20,2",  # no fraction, earlier: sorted first
            "2024-05-10T00:00:02.25Z,30,3",  # ISO T and Z
            "2024-05-10 02:00:03.1234567+02:00,40,4",  # zone: = 00:00:03.1234567 UTC
        ],
    )
    tr = load_trace(path)
    np.testing.assert_allclose(tr.arrival_s, [0.0, 1.5, 2.25, 3.1234567], atol=1e-6)
    assert tr.prompt_tokens.tolist() == [20, 10, 30, 40]


def test_burstgpt_excludes_failed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "b.csv",
        [
            BURST_HEADER,
            "5,ChatGPT,472,18,490,Conversation log",
            "6,GPT-4,1000,0,1000,Conversation log",  # failed
            "7,ChatGPT,0,0,0,API log",  # failed, no prompt counted
            "9,GPT-4,800,200,1000,API log",
        ],
    )
    tr = load_trace(path)
    assert len(tr) == 2 and tr.excluded_rows == 2 and tr.skipped_rows == 0
    assert tr.arrival_s.tolist() == [0.0, 4.0]
    assert tr.field.tolist() == ["ChatGPT", "GPT-4"]
    assert tr.output_tokens.tolist() == [18, 200]
    # the window origin is the file's first row; starting 1 s later drops only that row
    assert load_trace(path, start_s=1.0).arrival_s.tolist() == [0.0]


def test_mooncake(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.jsonl",
        jsonl(
            [
                {"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [0, 1, 2]},
                {"timestamp": 3052, "input_length": 6472, "output_length": 26, "hash_ids": [3]},
            ]
        )
        + [""],
    )
    tr = load_trace(path)
    assert tr.arrival_s.tolist() == [0.0, 3.052] and tr.prompt_tokens.tolist() == [6955, 6472]
    assert tr.output_tokens.tolist() == [52, 26] and tr.field is None


def test_native(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "n.jsonl",
        jsonl(
            [
                {"t": 10.0, "prompt_tokens": 5, "output_tokens": 7, "id": "a", "field": "chat"},
                {"t": 10.5, "prompt_tokens": 6, "output_tokens": 8, "id": "b", "field": "code"},
            ]
        ),
    )
    tr = load_trace(path)
    assert tr.arrival_s.tolist() == [0.0, 0.5] and tr.field.tolist() == ["chat", "code"]
    no_field = write(tmp_path, "n2.jsonl", jsonl([{"t": 1, "prompt_tokens": 5, "output_tokens": 7}]))
    assert load_trace(no_field, "native").field is None


def test_auto_rejects_unknown(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"x\.csv:1: unrecognised CSV header"):
        load_trace(write(tmp_path, "x.csv", ["a,b", "1,2"]))
    with pytest.raises(TraceError, match=r"unknown trace format 'nope'"):
        load_trace(write(tmp_path, "y.csv", AZURE_ROWS), "nope")


# ---- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "lines", "fmt", "expected"),
    [
        (
            "a.csv",
            AZURE_ROWS[:2] + ["2023-11-16 18:15:47.0,abc,3"] + AZURE_ROWS[2:],
            "auto",
            ":3: column 'ContextTokens': 'abc' is not an integer",
        ),
        (
            "a.csv",
            AZURE_ROWS + ["2023-11-16 18:15:52.0,5,0"],
            "azure",
            ":6: column 'GeneratedTokens': '0' is not a positive integer",
        ),
        ("a.csv", AZURE_ROWS + ["not-a-time,5,3"], "auto", ":6: column 'TIMESTAMP': 'not-a-time' is not a date-time"),
        ("a.csv", AZURE_ROWS + ["2023-11-16 18:15:52.0,5"], "auto", ":6: column 'GeneratedTokens': missing value"),
        ("a.csv", AZURE_ROWS + ["2023-11-16 18:15:52.0,5,3,9"], "auto", ":6: expected 3 fields, saw 4"),
        (
            "b.csv",
            [BURST_HEADER, "1,ChatGPT,5,5,10,API log", "2,ChatGPT,5,-3,2,API log"],
            "auto",
            ":3: column 'Response tokens': '-3' is not an integer >= 0",
        ),
        (
            "b.csv",
            [BURST_HEADER, "1,ChatGPT,0,5,5,API log"],
            "auto",
            ":2: column 'Request tokens': '0' is not a positive integer",
        ),
        (
            "m.jsonl",
            jsonl(
                [
                    {"timestamp": 0, "input_length": 5, "output_length": 5},
                    {"timestamp": 1, "input_length": "x", "output_length": 5},
                ]
            ),
            "auto",
            ":2: column 'input_length': 'x' is not an integer",
        ),
        (
            "m.jsonl",
            jsonl([{"timestamp": 0, "input_length": 5, "output_length": 5}]) + ["", "{bad"],
            "mooncake",
            ":3: invalid JSON",
        ),
        (
            "n.jsonl",
            jsonl(
                [{"t": 0, "prompt_tokens": 5, "output_tokens": 5}, {"t": 1, "prompt_tokens": 2.5, "output_tokens": 5}]
            ),
            "auto",
            ":2: column 'prompt_tokens': '2.5' is not an integer",
        ),
        (
            "n.jsonl",
            jsonl(
                [
                    {"t": 0, "prompt_tokens": 5, "output_tokens": 5, "field": "x"},
                    {"t": 1, "prompt_tokens": 2, "output_tokens": 5},
                ]
            ),
            "native",
            ":2: column 'field': missing value",
        ),
        (
            "n.jsonl",
            jsonl(
                [
                    {"t": 0, "prompt_tokens": 5, "output_tokens": 5},
                    {"t": "soon", "prompt_tokens": 2, "output_tokens": 5},
                ]
            ),
            "native",
            ":2: column 't': 'soon' is not a number",
        ),
    ],
)
def test_line_numbered_errors(tmp_path: Path, name: str, lines: list[str], fmt: str, expected: str) -> None:
    path = write(tmp_path, name, lines)
    with pytest.raises(TraceError) as info:
        load_trace(path, fmt)
    message = str(info.value)
    assert message.startswith(path + ":") and expected in message and "\n" not in message


def test_first_bad_line_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", AZURE_ROWS + ["2023-11-16 18:15:52.0,5,x", "2023-11-16 18:15:53.0,y,3"])
    with pytest.raises(TraceError, match=r"a\.csv:6: column 'GeneratedTokens'"):
        load_trace(path)


def test_skip_bad_rows(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.csv",
        AZURE_ROWS[:2]
        + ["2023-11-16 18:15:47.0,abc,3", "", "bad,1,1"]
        + AZURE_ROWS[2:]
        + ["2023-11-16 18:15:52.0,5,3,9"],
    )
    tr = load_trace(path, skip_bad_rows=True)
    assert len(tr) == 4 and tr.skipped_rows == 3
    m = write(
        tmp_path,
        "m.jsonl",
        jsonl(
            [
                {"timestamp": 0, "input_length": 5, "output_length": 5},
                {"timestamp": 1, "input_length": 0, "output_length": 5},
            ]
        )
        + ["[1]", "{"],
    )
    tr = load_trace(m, skip_bad_rows=True)
    assert len(tr) == 1 and tr.skipped_rows == 3
    b = write(
        tmp_path, "b.csv", [BURST_HEADER, "1,ChatGPT,5,5,10,API log", "2,,5,5,10,API log", "3,GPT-4,5,0,5,API log"]
    )
    tr = load_trace(b, skip_bad_rows=True)
    assert (len(tr), tr.skipped_rows, tr.excluded_rows) == (1, 1, 1)


def test_missing_column_and_empty(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"a\.csv:1: missing column 'GeneratedTokens'"):
        load_trace(write(tmp_path, "a.csv", ["TIMESTAMP,ContextTokens", "2023-11-16 18:15:46,3"]), "azure")
    with pytest.raises(TraceError, match=r"e\.csv: no usable requests"):
        load_trace(write(tmp_path, "e.csv", AZURE_ROWS[:1]))


def test_missing_file_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSD_TRACES_DIR", str(tmp_path))
    with pytest.raises(TraceError) as info:
        load_trace("no-such-trace")
    message = str(info.value)
    assert message.startswith("no-such-trace: ") and str(tmp_path) in message
    assert "AzurePublicDataset" in message and "DSD_TRACES_DIR" in message and "\n" not in message


def test_find_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other"
    other.mkdir()
    write(other, "mine.jsonl", ['{"t": 0, "prompt_tokens": 1, "output_tokens": 1}'])
    write(other, "AzureLLMInferenceTrace_code.csv", AZURE_ROWS)
    monkeypatch.setenv("DSD_TRACES_DIR", f"{tmp_path / 'missing'}{__import__('os').pathsep}{other}")
    assert find_trace("mine") == other / "mine.jsonl"
    assert find_trace("azure-code") == other / "AzureLLMInferenceTrace_code.csv"
    assert find_trace(str(other / "mine.jsonl")) == other / "mine.jsonl"
    assert len(load_trace("mine")) == 1


# ---- windowing ---------------------------------------------------------------------------------------


def native_file(tmp_path: Path, times: list[float]) -> str:
    return write(
        tmp_path, "w.jsonl", jsonl([{"t": t, "prompt_tokens": 1 + i, "output_tokens": 1} for i, t in enumerate(times)])
    )


def test_window_and_scales(tmp_path: Path) -> None:
    path = native_file(tmp_path, [100.0, 101.0, 102.5, 104.0, 110.0])
    assert load_trace(path, start_s=1.0, duration_s=3.0).prompt_tokens.tolist() == [2, 3]  # 1 <= t-t0 < 4
    tr = load_trace(path, start_s=1.0, duration_s=3.5)
    assert tr.prompt_tokens.tolist() == [2, 3, 4] and tr.arrival_s.tolist() == [0.0, 1.5, 3.0]
    assert tr.request_id.tolist() == [0, 1, 2]
    tr = load_trace(path, start_s=1.0, duration_s=3.5, max_requests=2, rate_scale=2.0)
    assert tr.arrival_s.tolist() == [0.0, 0.75]
    tr = load_trace(path, time_scale=3.0, rate_scale=2.0, max_requests=3)
    np.testing.assert_allclose(tr.arrival_s, [0.0, 1.5, 3.75])
    assert load_trace(path, start_s=10.0).prompt_tokens.tolist() == [5]  # start boundary is inclusive
    with pytest.raises(TraceError, match=r"w\.jsonl: no requests in window \[4\.5 s, 9 s\)"):
        load_trace(path, start_s=4.5, duration_s=4.5)
    with pytest.raises(TraceError, match="duration_s must be > 0"):
        load_trace(path, duration_s=0.0)
    with pytest.raises(TraceError, match="max_requests must be"):
        load_trace(path, max_requests=0)


def test_unsorted_rows_are_sorted_stably(tmp_path: Path) -> None:
    tr = load_trace(native_file(tmp_path, [5.0, 3.0, 5.0, 3.0]))
    assert tr.arrival_s.tolist() == [0.0, 0.0, 2.0, 2.0] and tr.prompt_tokens.tolist() == [2, 4, 1, 3]


# ---- synthetic ---------------------------------------------------------------------------------------


def test_synthetic_deterministic_and_means() -> None:
    a = generate_synthetic(n_requests=20000, rate_rps=10.0, prompt_mean=1000, output_mean=200, seed=7)
    b = load_trace(
        None, "synthetic", synthetic=dict(n_requests=20000, rate_rps=10.0, prompt_mean=1000, output_mean=200), seed=7
    )
    c = generate_synthetic(n_requests=20000, rate_rps=10.0, prompt_mean=1000, output_mean=200, seed=8)
    assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.prompt_tokens, b.prompt_tokens)
    assert not np.array_equal(a.prompt_tokens, c.prompt_tokens)
    assert a.source.startswith("synthetic:poisson") and a.field is None and a.arrival_s[0] == 0.0
    assert np.all(np.diff(a.arrival_s) >= 0) and a.prompt_tokens.min() >= 1 and a.output_tokens.min() >= 1
    assert abs(len(a) / a.arrival_s[-1] - 10.0) < 0.5
    assert abs(a.prompt_tokens.mean() / 1000 - 1) < 0.05 and abs(a.output_tokens.mean() / 200 - 1) < 0.05
    u = generate_synthetic(
        n_requests=5, rate_rps=4.0, prompt_mean=10, output_mean=10, arrival="uniform", prompt_sigma=0.0
    )
    assert u.arrival_s.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0] and u.prompt_tokens.tolist() == [10] * 5
    w = load_trace(
        None,
        "synthetic",
        synthetic=dict(n_requests=10, rate_rps=1.0, prompt_mean=5, output_mean=5, arrival="uniform"),
        start_s=2,
        max_requests=3,
        rate_scale=2,
    )
    assert w.arrival_s.tolist() == [0.0, 0.5, 1.0]


def test_synthetic_errors() -> None:
    with pytest.raises(TraceError, match=r"^synthetic: .*rate_rps must be > 0"):
        generate_synthetic(n_requests=5, rate_rps=0.0, prompt_mean=10, output_mean=10)
    with pytest.raises(TraceError, match=r"^synthetic: unknown parameter\(s\) bogus"):
        load_trace(
            None, "synthetic", synthetic=dict(n_requests=5, rate_rps=1.0, prompt_mean=10, output_mean=10, bogus=1)
        )
    with pytest.raises(TraceError, match=r"^synthetic: missing parameter\(s\) output_mean"):
        load_trace(None, "synthetic", synthetic=dict(n_requests=5, rate_rps=1.0, prompt_mean=10))


# ---- mapping -----------------------------------------------------------------------------------------


def test_assign_edges_modes(tmp_path: Path) -> None:
    tr = generate_synthetic(n_requests=1000, rate_rps=5.0, prompt_mean=10, output_mean=10)
    rr = assign_edges(tr, 3)
    assert rr.dtype == np.int32 and rr[:6].tolist() == [0, 1, 2, 0, 1, 2]
    assert np.bincount(rr).tolist() == [334, 333, 333]
    h1, h2 = assign_edges(tr, 4, "hashed", seed=1), assign_edges(tr, 4, "hashed", seed=1)
    assert np.array_equal(h1, h2) and not np.array_equal(h1, assign_edges(tr, 4, "hashed", seed=2))
    assert h1.min() == 0 and h1.max() == 3 and np.bincount(h1).min() > 200
    r = assign_edges(tr, 4, "random", seed=3)
    assert np.array_equal(r, assign_edges(tr, 4, "random", seed=3)) and set(r.tolist()) == {0, 1, 2, 3}
    with pytest.raises(TraceError, match="by_field"):
        assign_edges(tr, 4, "by_field")
    with pytest.raises(TraceError, match="unknown edge mode"):
        assign_edges(tr, 4, "nearest")
    with pytest.raises(TraceError, match="n_edges"):
        assign_edges(tr, 0)

    labels = ["a", "b", "c", "a", "d", "b", "a", "e"]
    path = write(
        tmp_path,
        "f.jsonl",
        jsonl([{"t": i, "prompt_tokens": 1, "output_tokens": 1, "field": f} for i, f in enumerate(labels)]),
    )
    ft = load_trace(path)
    edges = assign_edges(ft, 3, "by_field")
    for label in set(labels):
        assert len({int(e) for e, f in zip(edges, labels) if f == label}) == 1
    assert np.array_equal(edges, assign_edges(ft, 3, "by_field")) and edges.dtype == np.int32


# ---- the real Azure trace, when present -------------------------------------------------------------


def test_real_azure_conv_trace() -> None:
    try:
        path = find_trace("azure-conv")
    except TraceError:
        pytest.skip("AzureLLMInferenceTrace_conv.csv not available")
    tr = load_trace(path)
    assert len(tr) == 19366
    assert int(tr.output_tokens.sum()) == int(pd.read_csv(path)["GeneratedTokens"].sum())
    assert tr.arrival_s[0] == 0.0 and np.all(np.diff(tr.arrival_s) >= 0)
