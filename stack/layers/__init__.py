"""The micro-protocol layers, one per module, registered by stack token (written out by hand)."""

from cohort.stack.layers.auth import Auth
from cohort.stack.layers.batch import Batch
from cohort.stack.layers.bottom import Bottom
from cohort.stack.layers.encrypt import Encrypt
from cohort.stack.layers.flow import Flow
from cohort.stack.layers.flush import Flush
from cohort.stack.layers.frag import Frag
from cohort.stack.layers.gms import Gms
from cohort.stack.layers.nak import Nak
from cohort.stack.layers.pt2pt import Pt2pt
from cohort.stack.layers.sequencer import Sequencer
from cohort.stack.layers.stable import StableLayer
from cohort.stack.layers.suspect import SuspectLayer
from cohort.stack.layers.top import Top

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
