"""``sftlab export --gguf``: a trained Llama-family model as a GGUF file (f16 or q8_0), plus an Ollama Modelfile.

A GGUF is what llama.cpp, Ollama and LM Studio run, and what transformers reads back with ``gguf_file=``.
The file is written through the ``gguf`` package's writer in llama.cpp's layout for the ``llama``
architecture, which is what transformers' GGUF loader undoes on reading:

- tensor names from gguf's own HF-to-GGUF name map (``model.layers.0.self_attn.q_proj`` ->
  ``blk.0.attn_q``); a tied LM head is left out (readers tie it back from the missing ``output.weight``);
- the rows of ``q_proj`` and ``k_proj`` permuted per head from Hugging Face's rotate-half rotary layout to
  the interleaved pairs llama.cpp's RoPE rotates (:func:`permute_qk`; transformers applies the inverse);
- 2-d weights in f16 or in Q8_0 blocks (32 weights and one f16 scale per block, ``gguf.quants``), norms
  in f32 as llama.cpp keeps them; a weight whose rows are not a whole number of blocks stays f16;
- the tokenizer as llama.cpp's byte-level BPE (``gpt2``) metadata: tokens in id order, their types
  (control for special tokens), merges, special token ids, and the chat template.

The file is written beside its destination and renamed into place, so a killed export leaves no
truncated GGUF behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftlab.errors import SftlabError

#: What ``--type`` accepts: f16 (near-exact) and q8_0 (half the size, ~1e-2 relative error per weight).
GGUF_TYPES = ("f16", "q8_0")
#: Rotary scaling kinds llama.cpp's ``llama`` architecture reads from plain metadata; others are refused.
_PLAIN_ROPE = (None, "default")
#: gguf token types.
_NORMAL, _CONTROL = 1, 3


@dataclass(frozen=True)
class ExportResult:
    gguf: Path
    modelfile: Path
    tensors: int
    bytes: int
    gguf_type: str


def permute_qk(weight: Any, n_head: int) -> Any:
    """Reorder the output rows of a q/k projection from rotate-half to interleaved rotary pairs.

    Hugging Face's Llama rotates dimension ``i`` with ``i + d/2`` inside each head; llama.cpp rotates
    ``2i`` with ``2i + 1``. Within each head the rows ``[a_0..a_{d/2-1}, b_0..b_{d/2-1}]`` become
    ``[a_0, b_0, a_1, b_1, ...]``. ``n_head`` is the number of heads this projection produces
    (the key/value heads for ``k_proj``).
    """
    rows = weight.shape[0]
    half = rows // n_head // 2
    return weight.reshape(n_head, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def export_gguf(model_spec: str, out_path: str | os.PathLike, *, gguf_type: str = "f16",
                chat_template: str | None = None) -> ExportResult:
    """Write ``model_spec`` (a ``sftlab train`` output, checkpoint, hub id or GGUF) as a GGUF at ``out_path``,
    and an Ollama Modelfile beside it (``<stem>.Modelfile``)."""
    if gguf_type not in GGUF_TYPES:
        raise SftlabError(f"unknown GGUF type '{gguf_type}'; choose from {', '.join(GGUF_TYPES)}")
    out = Path(out_path)
    if out.suffix != ".gguf":
        raise SftlabError(f"--gguf {out}: the output file name must end in .gguf")
    from sftlab.models.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_spec, chat_template=chat_template)
    model = load_model(model_spec)
    check_exportable(model.config, model_spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        n = _write(model, tokenizer, tmp, gguf_type, name=Path(model_spec).name or model_spec)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    modelfile = out.with_suffix(".Modelfile")
    from sftlab.utils import atomic_write_text

    atomic_write_text(modelfile, ollama_modelfile(tokenizer, f"./{out.name}", _stop_tokens(model, tokenizer)))
    return ExportResult(gguf=out, modelfile=modelfile, tensors=n, bytes=out.stat().st_size, gguf_type=gguf_type)


def check_exportable(config: Any, spec: str) -> None:
    """Refuse, in one line, what the ``llama`` GGUF layout written here cannot express."""
    if getattr(config, "model_type", None) != "llama":
        raise SftlabError(f"cannot export '{spec}' as GGUF: model type '{getattr(config, 'model_type', None)}'; "
                          "only Llama-architecture models (SmolLM2, Llama) are supported")
    rope = getattr(config, "rope_scaling", None) or {}
    kind = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    if kind not in _PLAIN_ROPE:
        raise SftlabError(f"cannot export '{spec}' as GGUF: rope scaling '{kind}' is not supported")
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(config, flag, False):
            raise SftlabError(f"cannot export '{spec}' as GGUF: {flag} is set (llama GGUFs carry no biases)")


def _write(model: Any, tokenizer: Any, path: Path, gguf_type: str, *, name: str) -> int:
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(path, "llama")
    _write_config(writer, cfg, gguf_type, name)
    _write_tokenizer(writer, tokenizer, cfg.vocab_size)
    n = 0
    for hf_name, array, qtype in _tensors(model, gguf_type):
        writer.add_tensor(hf_name, array, raw_dtype=qtype)
        n += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return n


def _write_config(writer: Any, cfg: Any, gguf_type: str, name: str) -> None:
    import gguf

    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer.add_name(name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads or cfg.num_attention_heads)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != cfg.hidden_size // cfg.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    theta = getattr(cfg, "rope_theta", None) or (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta")
    writer.add_rope_freq_base(float(theta if theta is not None else 10000.0))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if gguf_type == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _tensors(model: Any, gguf_type: str):
    """``(gguf name, array, quantisation type)`` for every weight, in the model's order."""
    import gguf
    import numpy as np

    cfg = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    n_kv = cfg.num_key_value_heads or cfg.num_attention_heads
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue
        if "rotary_emb" in hf_name:
            continue
        base, _, suffix = hf_name.rpartition(".")
        gname = names.get_name(base)
        if gname is None:
            raise SftlabError(f"cannot export tensor '{hf_name}': no GGUF name for it in the llama layout")
        w = tensor.detach().float().cpu().numpy()
        if base.endswith("self_attn.q_proj"):
            w = permute_qk(w, cfg.num_attention_heads)
        elif base.endswith("self_attn.k_proj"):
            w = permute_qk(w, n_kv)
        yield f"{gname}.{suffix}", *_encode(np.ascontiguousarray(w), gguf_type)


def _encode(w: Any, gguf_type: str) -> tuple[Any, Any]:
    import gguf
    import numpy as np

    if w.ndim < 2:
        return w.astype(np.float32), gguf.GGMLQuantizationType.F32
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]
    if gguf_type == "q8_0" and w.shape[-1] % block == 0:
        q = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(w.astype(np.float32), q), q
    return w.astype(np.float16), gguf.GGMLQuantizationType.F16


def _write_tokenizer(writer: Any, tokenizer: Any, vocab_size: int) -> None:
    """The tokenizer as llama.cpp's byte-level BPE metadata (what transformers' GGUF loader rebuilds)."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    model = backend.get("model") or {}
    if model.get("type") != "BPE" or not _byte_level(backend):
        raise SftlabError("cannot export the tokenizer as GGUF: only byte-level BPE tokenizers (GPT-2 style, "
                          "as SmolLM2's) are supported")
    vocab = tokenizer.get_vocab()
    by_id = {i: t for t, i in vocab.items()}
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    special = {a["content"] for a in backend.get("added_tokens", []) if a.get("special")}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm" if _splits_digits(backend) else "gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([_CONTROL if t in special else _NORMAL for t in tokens])
    writer.add_token_merges(merges)
    for token, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                       ("unk", writer.add_unk_token_id), ("pad", writer.add_pad_token_id)):
        tid = getattr(tokenizer, f"{token}_token_id", None)
        if tid is not None:
            add(int(tid))
    writer.add_add_bos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _pre_parts(backend: dict[str, Any]) -> list[dict[str, Any]]:
    pre = backend.get("pre_tokenizer") or {}
    return pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]


def _byte_level(backend: dict[str, Any]) -> bool:
    return any(p.get("type") == "ByteLevel" for p in _pre_parts(backend))


def _splits_digits(backend: dict[str, Any]) -> bool:
    """SmolLM's pre-tokenizer splits every digit (llama.cpp calls it ``smollm``); GPT-2's does not."""
    return any(p.get("type") == "Digits" and p.get("individual_digits") for p in _pre_parts(backend))


# ------------------------------------------------------------------------------------------ Ollama

_SENTINELS = {"system": "\x00SFTLAB-SYSTEM\x00", "user": "\x00SFTLAB-USER\x00", "assistant": "\x00SFTLAB-REPLY\x00"}


@dataclass(frozen=True)
class TurnFormat:
    """A chat template read as ``prefix(role) + content + end`` per turn (what Ollama's template needs)."""

    system_prefix: str
    user_prefix: str
    assistant_prefix: str
    end: str
    default_system: str | None


def turn_format(tokenizer: Any) -> TurnFormat | None:
    """Recover each role's prefix and the turn end by rendering the template around sentinel contents;
    None when the template is not of that shape (Ollama then reads the GGUF's own chat template)."""
    s, u, a = (_SENTINELS[r] for r in ("system", "user", "assistant"))
    try:
        full = tokenizer.apply_chat_template(
            [{"role": "system", "content": s}, {"role": "user", "content": u}, {"role": "assistant", "content": a}],
            tokenize=False)
        gen = tokenizer.apply_chat_template([{"role": "system", "content": s}, {"role": "user", "content": u}],
                                            tokenize=False, add_generation_prompt=True)
        bare = tokenizer.apply_chat_template([{"role": "user", "content": u}], tokenize=False,
                                             add_generation_prompt=True)
    except Exception:  # a template that needs other inputs: leave it to the GGUF metadata
        return None
    if not all(x in full for x in (s, u, a)):
        return None
    sys_prefix, rest = full.split(s, 1)
    mid1, rest = rest.split(u, 1)
    mid2, end = rest.split(a, 1)
    if not end or not mid1.startswith(end) or not mid2.startswith(end) or not gen.endswith(mid2):
        return None
    user_prefix, asst_prefix = mid1[len(end):], mid2[len(end):]
    default_system = None
    head = bare.split(u, 1)[0]
    if head != user_prefix and head.startswith(sys_prefix) and head.endswith(end + user_prefix):
        default_system = head[len(sys_prefix):len(head) - len(end + user_prefix)]
    return TurnFormat(sys_prefix, user_prefix, asst_prefix, end, default_system)


def ollama_modelfile(tokenizer: Any, gguf_ref: str, stops: list[str]) -> str:
    """An Ollama Modelfile: FROM the GGUF, the template in Ollama's Go syntax, greedy-friendly stops."""
    lines = [f"FROM {gguf_ref}", ""]
    fmt = turn_format(tokenizer)
    if fmt is None:
        lines.append("# the chat template could not be expressed here; Ollama reads the GGUF's tokenizer.chat_template")
    else:
        template = (
            f"{{{{ if .System }}}}{fmt.system_prefix}{{{{ .System }}}}{fmt.end}{{{{ end }}}}"
            f"{{{{ if .Prompt }}}}{fmt.user_prefix}{{{{ .Prompt }}}}{fmt.end}{{{{ end }}}}"
            f"{fmt.assistant_prefix}{{{{ .Response }}}}{fmt.end}"
        )
        lines.append(f'TEMPLATE """{template}"""')
        if fmt.default_system:
            lines.append(f'SYSTEM """{fmt.default_system}"""')
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    return "\n".join(lines) + "\n"


def _stop_tokens(model: Any, tokenizer: Any) -> list[str]:
    """The strings that end a reply: the template's turn end and every eos id the model generates with."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    stops: list[str] = []
    fmt = turn_format(tokenizer)
    if fmt and fmt.end.strip():
        stops.append(fmt.end.strip())
    for i in ids:
        tok = tokenizer.convert_ids_to_tokens(int(i))
        if tok and tok not in stops:
            stops.append(tok)
    return stops
