"""The `swarm` backend: one Docker Swarm service per bot attempt, through a manager node's engine.

Each attempt is a service of one replica with restart policy `none` (the manager owns
restarts), its image named by id (resolved on the manager's engine: by tag, every node would
try a registry first), the docker backend's hardening where the service API has a field for it,
and labels that identify botfleet, the bot and the user. The token and secrets travel in one
Docker secret per attempt, fed to the runtime's secret pipe: never in the service's env,
labels or command (`service_spec`). Placement constraints are Swarm's own expressions
(`constraints`). A `state_key` volume is local to one node, and the bot is pinned to that node
(`nodes`). Statuses follow one mapping, where a task on a node that is down is unknown, never
ended (`status`). Logs and exact-grace stops go to the node's own engine where botfleet reaches
it (`BOTFLEET_SWARM_NODE_ENGINES`), else through the swarm (`logs`).

The docker SDK blocks; the manager calls every method here from worker threads. Users' guide:
docs/how-to/swarm.md.

Modules: `backend` (the Orchestrator), `config` (`BOTFLEET_SWARM_*`), `constraints`,
`service_spec`, `status`, `nodes` (node engines, state pinning), `logs`.
"""

from botfleet.orchestrators.swarm.backend import SwarmOrchestrator
from botfleet.orchestrators.swarm.config import SwarmOrchestratorConfig

__all__ = ["SwarmOrchestrator", "SwarmOrchestratorConfig"]
