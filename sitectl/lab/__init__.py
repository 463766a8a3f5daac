"""sitectl.lab: a lab of real LXC guests with systemd on this machine (see README.md)."""

from .host import *  # noqa: F401,F403
from .host import __all__  # noqa: F401
