"""``sftlab export MODEL --gguf OUT.gguf``: a trained model as a GGUF (f16 or q8_0) and an Ollama Modelfile."""

from __future__ import annotations

import argparse

HELP = "Export a trained model as a GGUF file (f16 or q8_0) for llama.cpp / Ollama, with an Ollama Modelfile."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sftlab.models.export import GGUF_TYPES

    p.add_argument("model", help="the model: a `sftlab train` output dir, checkpoint, hub id, .gguf file, "
                                 "or smollm2-135m-instruct-gguf")
    p.add_argument("--gguf", required=True, metavar="OUT.gguf",
                   help="the GGUF file to write; OUT.Modelfile (Ollama) is written beside it")
    p.add_argument("--type", dest="gguf_type", choices=GGUF_TYPES, default="f16",
                   help="weight encoding: f16 (default, near-exact) or q8_0 (8-bit blocks, about half the size)")
    p.add_argument("--chat-template", metavar="NAME|FILE", default=None,
                   help="chat template to store: 'chatml', a .jinja file, or the tokenizer's own (default)")


def run(args: argparse.Namespace) -> int:
    from sftlab.models.export import export_gguf

    res = export_gguf(args.model, args.gguf, gguf_type=args.gguf_type, chat_template=args.chat_template)
    print(f"wrote {res.gguf} ({res.gguf_type}, {res.tensors} tensors, {res.bytes / 2**20:.1f} MiB) "
          f"and {res.modelfile} (ollama create NAME -f {res.modelfile})")
    return 0
