"""README's "Coming from TRL / Axolotl / LLaMA-Factory" tables, generated from the profiles.

``python -m sftlab.train.peers.docs`` prints the generated part; a test checks that README.md holds
exactly this text, so the README cannot drift from what the resolver does.
"""

from __future__ import annotations

from pathlib import Path

from sftlab.train.peers import axolotl, llamafactory, trl

MODULES = (trl, axolotl, llamafactory)
#: The example configs, one per peer (configs/peers, relative to the repository root).
EXAMPLES = {"TRL": "configs/peers/trl_sft.yaml", "Axolotl": "configs/peers/axolotl_lora.yml",
            "LLaMA-Factory": "configs/peers/llamafactory_lora_sft.yaml"}


def _cell(text: str) -> str:
    return text.replace("|", "/")


def alias_table() -> str:
    """Every alias: the peer key, the sftlab key it is read as."""
    lines = ["| Peer | Key | Read as |", "|---|---|---|"]
    for m in MODULES:
        lines += [f"| {m.PROFILE.name} | `{k}` | `{v.target}` |" for k, v in m.PROFILE.keys.items() if v.kind == "alias"]
    return "\n".join(lines)


def noted_table() -> str:
    """Keys accepted because what the peer does with them is what sftlab does (or read by code)."""
    lines = ["| Peer | Key | Accepted as |", "|---|---|---|"]
    for m in MODULES:
        lines += [f"| {m.PROFILE.name} | `{k}` | {_cell(v.note)} |" for k, v in m.PROFILE.keys.items()
                  if v.kind == "noted"]
    lines += [f"| LLaMA-Factory | `{k}` | {_cell(note)} |" for k, note in llamafactory.CONTEXT_NOTES.items()]
    return "\n".join(lines)


def refused_table() -> str:
    """Every refused key of every peer with its reason."""
    lines = ["| Peer | Refused key | Why, and what sftlab does instead |", "|---|---|---|"]
    for m in MODULES:
        lines += [f"| {m.PROFILE.name} | `{k}` | {_cell(v.refused)} |" for k, v in m.PROFILE.keys.items()
                  if v.kind == "refused"]
    return "\n".join(lines)


def examples(root: Path) -> str:
    """The example configs as README shows them (each file whole)."""
    parts = []
    for peer, rel in EXAMPLES.items():
        parts.append(f"{peer} (`{rel}`):\n\n```yaml\n{(root / rel).read_text(encoding='utf-8').rstrip()}\n```")
    return "\n\n".join(parts)


def generated(root: Path) -> str:
    return "\n\n".join([examples(root), "Aliases (each rewrite is printed once):", alias_table(),
                        "Accepted with a note (printed once):", noted_table(),
                        "Refused (all of a config's refused keys are named in one error line; the peer's own "
                        "'off' value, such as `load_in_4bit: false` or an empty `wandb_project:`, is accepted):",
                        refused_table()])


if __name__ == "__main__":  # pragma: no cover
    print(generated(Path.cwd()))
