"""Peer profiles: TRL, Axolotl and LLaMA-Factory config keys, each peer in one module (see ``base``)."""
