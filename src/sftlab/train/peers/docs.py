"""The README's lists of the peers' refused keys, generated from the profiles (``python -m
sftlab.train.peers.docs`` prints them; a test checks that the README holds exactly this text)."""

from __future__ import annotations

from sftlab.train.peers import axolotl, llamafactory, trl


def refused_table() -> str:
    """A Markdown table: every refused key of every peer with its reason."""
    lines = ["| Peer | Refused key | Why, and what sftlab does instead |", "|---|---|---|"]
    for module in (trl, axolotl, llamafactory):
        for name, key in module.PROFILE.keys.items():
            if key.kind == "refused":
                lines.append(f"| {module.PROFILE.name} | `{name}` | {key.refused.replace('|', '/')} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(refused_table())
