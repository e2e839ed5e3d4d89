"""The `process` backend: each bot runs as a local child process (the embedded default).

Bots live in their own session, so Ctrl-C or a restart of the manager does not kill them, and a
stop can signal the whole process group. Each workload has a small JSON record under
`<data_dir>/workloads/` so that a new manager process finds its bots again; the record identifies
the process by pid AND start time (field 22 of /proc/<pid>/stat), which guards against pid reuse.
The record never holds the environment, and the environment never holds a secret: the token and
secrets reach the runtime through an inherited pipe (`botfleet.runtime.env.SECRET_ENV_FD`).

When the manager is root, each bot runs under an unprivileged uid of its own, in its own working
directory, with resource limits (`bot_uids`; see orchestrators/process_isolation.py). Without
that, bots share the manager's user: the backend is then for development and trusted bots only.
Stop and remove kill the bot's children too, also after the bot itself exited.

Modules: `backend` (the Orchestrator), `config` (`BOTFLEET_PROCESS_*`), `spawn` (starting one
bot), `records` (the workload records), `status` (exit codes and reaping), `uids` (the bot-uid
decision, killing and removing what a bot left), `uid_pool` (which uid a bot gets, never one
with `leftovers`: files in shared places, IPC objects), `state` (`state_key` folders),
`logs` (log files, their tails, followers and rotation), `log_pipes` (each bot's output pipe,
read into its log within the cap), `sandbox` (each bot's private, capped /tmp and /dev/shm) and
`kind_envs` (a virtualenv per kind that brings its own package, with `runtime_wheel`).
"""

from botfleet.orchestrators.process.backend import ProcessOrchestrator
from botfleet.orchestrators.process.config import ProcessOrchestratorConfig
from botfleet.orchestrators.process.spawn import INHERITED_ENV

__all__ = ["INHERITED_ENV", "ProcessOrchestrator", "ProcessOrchestratorConfig"]
