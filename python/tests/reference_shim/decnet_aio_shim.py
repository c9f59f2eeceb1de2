"""pytest plugin: the reference's ``decnet.swarm.client`` and
``decnet.swarm.updater_client`` re-export :mod:`decnet_agent_client.aio`.

Loaded with ``-p decnet_aio_shim`` by ``test_reference_harness.py`` before any
reference test module imports them, so ``from decnet.swarm.client import
AgentClient`` (and ``swarm_client.AgentClient`` looked up at call time) get
ours; every other reference module (pki, the agent app) stays theirs.
"""

import decnet.swarm.client as reference_client
import decnet.swarm.updater_client as reference_updater

from decnet_agent_client import aio

for name in ("AgentClient", "MasterIdentity", "ensure_master_identity", "FingerprintMismatchError"):
    setattr(reference_client, name, getattr(aio, name))
for name in ("UpdaterClient", "MasterIdentity", "ensure_master_identity", "FingerprintMismatchError"):
    setattr(reference_updater, name, getattr(aio, name))


def pytest_terminal_summary(terminalreporter):
    """Names, after the run, the classes the reference modules hand out."""
    for module, name in ((reference_client, "AgentClient"), (reference_updater, "UpdaterClient")):
        cls = getattr(module, name)
        terminalreporter.write_line(f"{module.__name__}.{name} is {cls.__module__}.{cls.__name__}")
