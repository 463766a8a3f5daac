"""sitectl: the tools around the state tree (master config, site checks, the lab)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
