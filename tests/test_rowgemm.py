"""nodes/rowgemm.py: the few-row linear kernel equals torch's product, a model gets it at load, autograd and other
cases keep torch's path, and it can be switched off."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from nodes import rowgemm  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _on() -> bool:
    rowgemm.load()
    if not rowgemm.cpu_supported():
        pytest.skip("this CPU has no AVX2 + FMA: the kernel is off by design")
    assert rowgemm.state().startswith("on ("), rowgemm.state()  # a C compiler is part of make setup
    return True


# I not a multiple of 8 (the scalar tail), O odd (the one-row kernel), M across groups of 6 and up to MAX_ROWS
@pytest.mark.parametrize("m", [1, 2, 5, 6, 7, 13, rowgemm.MAX_ROWS])
@pytest.mark.parametrize("n_in,n_out", [(576, 1536), (37, 11), (8, 1)])
@pytest.mark.parametrize("bias", [False, True])
def test_equals_torch_linear(m, n_in, n_out, bias):
    _on()
    g = torch.Generator().manual_seed(m * 1000 + n_in + n_out)
    x = torch.randn(m, n_in, generator=g)
    w = torch.randn(n_out, n_in, generator=g) * 0.05
    b = torch.randn(n_out, generator=g) if bias else None
    y = rowgemm.linear(x, w, b)
    ref = torch.nn.functional.linear(x.double(), w.double(), b.double() if bias else None).float()
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_batched_shape_and_non_contiguous_input():
    _on()
    x = torch.randn(3, 8, 2).transpose(1, 2)  # (3, 2, 8): 6 rows, not contiguous
    w = torch.randn(5, 8)
    y = rowgemm.linear_t(x, w)
    assert y.shape == (3, 2, 5)
    torch.testing.assert_close(y, x @ w.T, rtol=1e-5, atol=1e-5)


def test_dispatch_takes_torch_where_the_kernel_does_not_apply(monkeypatch):
    _on()
    calls = []
    real = rowgemm.linear
    monkeypatch.setattr(rowgemm, "linear", lambda *a: calls.append(1) or real(*a))
    w = torch.randn(4, 16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        rowgemm.linear_t(torch.randn(2, 16), w)
        assert calls == [1]
        rowgemm.linear_t(torch.randn(rowgemm.MAX_ROWS + 1, 16), w)  # a prefill: MKL
        rowgemm.linear_t(torch.randn(2, 16, dtype=torch.float64), w.double())
        wg = torch.randn(4, 16, requires_grad=True)
        out = rowgemm.linear_t(torch.randn(2, 16), wg)  # training (distill): autograd must see the product
        out.sum().backward()
        assert wg.grad is not None
        torch.set_num_threads(2)
        rowgemm.linear_t(torch.randn(2, 16), w)  # several threads: MKL spreads over them
    finally:
        torch.set_num_threads(threads)
    assert calls == [1]


def test_installed_model_gives_the_same_outputs(tmp_path):
    _on()
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=50,
        hidden_size=44,  # not a multiple of 8 (the kernel's scalar tail); 2 heads of 22 (RoPE wants an even dim)
        intermediate_size=72,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    ref = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    model = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert rowgemm.install(model).startswith("on (")
    kinds = {type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.Linear)}
    assert kinds == {"RowLinear"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ids = torch.tensor([[3, 7, 11, 2, 9]])
        with torch.inference_mode():
            a = model(ids).logits
            b = ref(ids).logits
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert set(model.state_dict()) == set(ref.state_dict())


def test_switched_off():
    out = subprocess.run(
        [sys.executable, "-c", "from nodes import rowgemm; rowgemm.load(); print(rowgemm.state())"],
        cwd=ROOT,
        env={**os.environ, "DSD_ROW_GEMM": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "off (DSD_ROW_GEMM=0)"
