"""The import rules of the layout: the client side never pulls in the group stack."""

from __future__ import annotations

import subprocess
import sys


def test_the_client_proxy_does_not_import_the_stack():
    code = (
        "import sys, orb.proxy, orb.refs, orb.errors;"
        "bad = sorted(m for m in sys.modules if m == 'stack' or m.startswith('stack.')"
        " or m == 'replication' or m.startswith('replication.'));"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"orb's client side imports {out.stdout.strip()}"


def test_state_imports_nothing_of_ours():
    code = (
        "import sys, state;"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('stack', 'replication', 'orb'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
