"""Stack specs: parse "top:…:bottom", check requires/provides, validate parameters.

Why checked at compose time: a stack missing a property (say `sequencer` without `flush`) runs
for a while and then violates virtual synchrony under the first crash. Refusing it up front, with the
name of a layer that fixes it, is the JGroups `@Property`/Ensemble `Property.choose` lesson.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cohort.stack.layers import REGISTRY

from cohort.errors import CohortError

#: frag sits above every ordering layer (fragments are ordered and retransmitted one by one; a
#: message is delivered at its last fragment's place) and flow right above flush (it sees every
#: cast nak numbers, and stability, and sends its queue before the flush report).
PRESETS: dict[str, str] = {
    "fifo": "top:frag:flow:stable:pt2pt:nak:bottom",
    "vsync": "top:frag:flow:flush:gms:suspect:stable:pt2pt:nak:bottom",
    "total": "top:frag:sequencer:flow:flush:gms:suspect:stable:pt2pt:nak:bottom",
    #: total order with the casts of one event-loop tick packed into one message (throughput)
    "total-batch": "top:batch:frag:sequencer:flow:flush:gms:suspect:stable:pt2pt:nak:bottom",
    #: total order in a closed group: joins authenticated by the group secret, every packet under
    #: an AEAD whose key changes at every view (needs params={"auth": {"secret": ...}})
    "secure": "top:frag:sequencer:flow:flush:gms:suspect:stable:pt2pt:nak:encrypt:auth:bottom",
    "secure-batch": (
        "top:batch:frag:sequencer:flow:flush:gms:suspect:stable:pt2pt:nak:encrypt:auth:bottom"
    ),
}

#: why a property is needed, for the layers where the bare name does not say it
WHY = {
    "keyx": "an encrypt layer needs an authenticated key exchange, or it would take keys from "
    "anyone",
}


class StackConfigError(CohortError, ValueError):
    """An impossible stack or an unknown parameter; the message says what to change."""


@dataclass(frozen=True)
class StackSpec:
    """A validated stack: layer classes bottom first, and each layer's Params instance."""

    spec: str
    classes: tuple[type, ...]
    params: tuple[Any, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def provides(self, prop: str) -> bool:
        return any(prop in c.provides for c in self.classes)

    def param(self, layer: str) -> Any:
        for c, p in zip(self.classes, self.params):
            if c.name == layer:
                return p
        raise KeyError(layer)


def parse(spec: str) -> list[str]:
    """Layer names, top first. A preset name expands to its spec."""
    spec = PRESETS.get(spec, spec)
    names = [t.strip() for t in spec.split(":") if t.strip()]
    if not names:
        raise StackConfigError("empty stack spec; try one of: " + ", ".join(PRESETS))
    for t in names:
        if t not in REGISTRY:
            raise StackConfigError(
                f"unknown layer {t!r} in {spec!r}; known layers: {', '.join(sorted(REGISTRY))}"
            )
    if len(set(names)) != len(names):
        raise StackConfigError(f"a layer appears twice in {spec!r}")
    if names[0] != "top" or names[-1] != "bottom":
        raise StackConfigError(f"a stack starts with 'top' and ends with 'bottom': {spec!r}")
    return names


def check(names: list[str]) -> None:
    """Walk bottom-up: each layer's requires must be provided by the layers below it."""
    below: set[str] = set()
    below_names: list[str] = []
    for name in reversed(names):
        cls = REGISTRY[name]
        missing = sorted(cls.requires - below)
        if missing:
            prop = missing[0]
            fixes = sorted(n for n, c in REGISTRY.items() if prop in c.provides)
            where = f"below {name!r}"
            why = f" ({WHY[prop]})" if prop in WHY else ""
            raise StackConfigError(
                f"{name!r} requires {prop!r}, which no layer below it provides "
                f"(below: {', '.join(reversed(below_names)) or 'nothing'}); "
                f"add one of: {', '.join(fixes) or '(none)'} {where}{why}"
            )
        below |= cls.provides
        below_names.append(name)
    for i, name in enumerate(names):
        above = set().union(*(REGISTRY[n].provides for n in names[:i]))
        missing = sorted(REGISTRY[name].requires_above - above)
        if missing:
            fixes = sorted(n for n, c in REGISTRY.items() if missing[0] in c.provides)
            raise StackConfigError(
                f"{name!r} requires {missing[0]!r} above it; add one of: {', '.join(fixes)} "
                f"above {name!r}"
            )
    _check_protection(names)


def _check_protection(names: list[str]) -> None:
    """encrypt and auth come together, at the bottom: a layer below the cipher would send its
    headers in clear, and a key exchange without encryption protects nothing in the view."""
    if "auth" in names and "encrypt" not in names:
        raise StackConfigError(
            "'auth' without 'encrypt' leaves in-view packets unprotected; add encrypt right above "
            "auth (encrypt confidential=False if you only need authentication)"
        )
    if "encrypt" in names and names[-3:] != ["encrypt", "auth", "bottom"]:
        raise StackConfigError(
            "'encrypt' must sit right above 'auth', and 'auth' right above 'bottom' "
            "(…:nak:encrypt:auth:bottom): a layer below the cipher would send its headers in clear"
        )


def _suite(names: list[str], built: list[Any]) -> str:
    """What a joiner's stack must match (auth binds it into the join): layers and protection."""
    enc = built[list(reversed(names)).index("encrypt")]
    return f"{':'.join(names)};{enc.cipher};confidential={enc.confidential}"


def compose(spec: str, params: dict[str, dict[str, Any]] | None = None) -> StackSpec:
    """Validate `spec` (a colon string, top first, or a preset name) and its parameters.

    With `params` given (even empty), the stack is about to run, and a layer missing a setting it
    cannot work without (the group secret of `auth`) is refused; without, only the shape is checked.
    """
    names = parse(spec)
    check(names)
    configured = params is not None
    params = dict(params or {})
    built: list[Any] = []
    for name in reversed(names):
        cls = REGISTRY[name]
        given = params.pop(name, {}) or {}
        fields = {f.name for f in dataclasses.fields(cls.Params)}
        unknown = sorted(set(given) - fields)
        if unknown:
            raise StackConfigError(
                f"unknown parameter(s) {', '.join(unknown)} for layer {name!r}; "
                f"valid: {', '.join(sorted(fields)) or '(none)'}"
            )
        try:
            built.append(cls.Params(**given))
        except (TypeError, ValueError) as e:
            raise StackConfigError(f"bad parameters for layer {name!r}: {e}") from None
    if params:
        raise StackConfigError(
            f"parameters given for layer(s) not in the stack: {', '.join(sorted(params))}"
        )
    if "auth" in names:
        i = list(reversed(names)).index("auth")
        built[i] = dataclasses.replace(built[i], suite=_suite(names, built))
    if configured:  # a stack about to run: every layer must have what it cannot work without
        for name, p in zip(reversed(names), built):
            ready = getattr(p, "ready", None)
            problem = ready() if callable(ready) else None
            if problem:
                raise StackConfigError(f"layer {name!r}: {problem}")
    classes = tuple(REGISTRY[n] for n in reversed(names))
    return StackSpec(PRESETS.get(spec, spec), classes, tuple(built))
