"""Cohort's group-communication stack: sans-I/O micro-protocol layers with virtual synchrony.

The public surface: compose a stack, run an Endpoint (driven by the simulator or a transport),
and the event and view types it speaks.
"""

from cohort.stack.compose import PRESETS, StackConfigError, StackSpec, compose
from cohort.stack.events import Block, Deliver, DeliverSend, Exit, Safe
from cohort.stack.events import View as ViewEvent
from cohort.stack.runtime import Endpoint
from cohort.stack.view import View

__all__ = [
    "PRESETS",
    "Block",
    "Deliver",
    "DeliverSend",
    "Endpoint",
    "Exit",
    "Safe",
    "StackConfigError",
    "StackSpec",
    "View",
    "ViewEvent",
    "compose",
]
