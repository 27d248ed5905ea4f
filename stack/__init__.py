"""Cohort's group-communication stack: sans-I/O micro-protocol layers with virtual synchrony.

The public surface: compose a stack, run an Endpoint (driven by the simulator or a transport),
and the event and view types it speaks.
"""

from stack.compose import PRESETS, StackConfigError, StackSpec, compose
from stack.events import Block, Deliver, DeliverSend, Exit, Safe
from stack.events import View as ViewEvent
from stack.runtime import Endpoint
from stack.view import View

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
