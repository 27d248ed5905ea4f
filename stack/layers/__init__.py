"""The micro-protocol layers, one per module, registered by stack token (written out by hand)."""

from stack.layers.auth import Auth
from stack.layers.batch import Batch
from stack.layers.bottom import Bottom
from stack.layers.encrypt import Encrypt
from stack.layers.flow import Flow
from stack.layers.flush import Flush
from stack.layers.frag import Frag
from stack.layers.gms import Gms
from stack.layers.nak import Nak
from stack.layers.pt2pt import Pt2pt
from stack.layers.sequencer import Sequencer
from stack.layers.stable import StableLayer
from stack.layers.suspect import SuspectLayer
from stack.layers.top import Top

REGISTRY: dict[str, type] = {
    "top": Top,
    "batch": Batch,
    "frag": Frag,
    "sequencer": Sequencer,
    "flow": Flow,
    "flush": Flush,
    "gms": Gms,
    "suspect": SuspectLayer,
    "stable": StableLayer,
    "pt2pt": Pt2pt,
    "nak": Nak,
    "encrypt": Encrypt,
    "auth": Auth,
    "bottom": Bottom,
}

__all__ = ["REGISTRY"]
