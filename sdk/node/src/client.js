// HTTP calls from the runtime to the manager (/internal/bots/{id}/…): lifecycle events, reports,
// pending commands, acks, the bot's secrets.
//
// Every call retries transient failures (connection errors, timeouts, 5xx, 429) with backoff
// within a budget, then gives up and logs: the bot keeps running even if the manager is away.
// Other 4xx are final (409: the manager refused the transition; 401/403: the token is no longer
// valid): retrying would not change the answer.
import { EVENT_EXITED, EVENT_HEARTBEAT, EVENT_REPORT, MAX_TEXT, parseCommand } from './protocol.js';
import { Backoff, sleep } from './backoff.js';

export const LIFECYCLE_BUDGET_S = 60;
export const HEARTBEAT_BUDGET_S = 5;
export const REPORT_BUDGET_S = 10;
export const PENDING_PAGE = 1000;
export const REQUEST_TIMEOUT_S = 10;

class Transient extends Error {}

export class ManagerClient {
  constructor({ baseUrl, botId, token, log, timeoutS = REQUEST_TIMEOUT_S, budgets = {} }) {
    this.base = `${baseUrl.replace(/\/+$/, '')}/internal/bots/${encodeURIComponent(botId)}`;
    this.headers = { Authorization: `Bearer ${token}`, 'User-Agent': 'botfleet-runtime-node' };
    this.log = log;
    this.timeoutS = timeoutS;
    this.budgets = { lifecycle: LIFECYCLE_BUDGET_S, heartbeat: HEARTBEAT_BUDGET_S, report: REPORT_BUDGET_S, ...budgets };
    // Once `exited` is accepted the manager revokes the token: a call after it (nothing should
    // make one) hears 401, which is then the expected end, not an error.
    this.exited = false;
  }

  /** POST one callback; true once the manager accepted it. */
  async sendEvent(event, { exitCode, reason, detail, data, signal } = {}) {
    const body = { event };
    if (exitCode != null) body.exit_code = exitCode;
    if (reason != null) body.reason = reason;
    if (detail != null) body.detail = String(detail).slice(0, MAX_TEXT);
    if (data != null) body.data = data;
    const budget =
      event === EVENT_HEARTBEAT
        ? this.budgets.heartbeat
        : event === EVENT_REPORT
          ? this.budgets.report
          : this.budgets.lifecycle;
    const accepted = (await this.call('POST', '/callbacks', `${event} callback`, budget, body, signal)) !== null;
    if (event === EVENT_EXITED && accepted) this.exited = true;
    return accepted;
  }

  /** Commands not yet acked, oldest first, every page read before any is applied; [] when the
   * manager cannot be reached. A plain array (a manager from before pages) is one last page. */
  async pendingCommands() {
    const commands = [];
    const seen = new Set();
    let cursor = null;
    for (;;) {
      const query = new URLSearchParams({ pending: '1', limit: String(PENDING_PAGE) });
      if (cursor) query.set('cursor', cursor);
      const what = 'reading pending commands';
      const data = await this.call('GET', `/commands?${query}`, what, this.budgets.lifecycle);
      let items = null;
      let next = null;
      if (Array.isArray(data)) items = data;
      else if (data && typeof data === 'object' && Array.isArray(data.items)) {
        items = data.items;
        next = typeof data.next_cursor === 'string' ? data.next_cursor : null;
      }
      if (items === null) {
        if (data !== null) this.log.error('pending commands: expected a page');
        return commands;
      }
      for (const item of items) {
        try {
          commands.push(parseCommand(item));
        } catch (err) {
          this.log.warn(`ignoring a malformed pending command: ${err.message}`);
        }
      }
      if (!next || seen.has(next)) return commands; // a repeated cursor would loop forever
      seen.add(next);
      cursor = next;
    }
  }

  /** Answer a command: {ok: true, result?} or {ok: false, error}. */
  async ack(commandId, ok, error = null, result = undefined) {
    const body = { ok };
    if (!ok) body.error = String(error || 'failed').slice(0, MAX_TEXT);
    else if (result !== undefined && result !== null) body.result = result;
    const path = `/commands/${encodeURIComponent(commandId)}/ack`;
    return (await this.call('POST', path, `ack ${commandId}`, this.budgets.lifecycle, body)) !== null;
  }

  /** The bot's current secrets (they never travel over Redis), or null. */
  async fetchSecrets() {
    const data = await this.call('GET', '/secrets', 'reading secrets', this.budgets.lifecycle);
    if (data === null || typeof data !== 'object' || Array.isArray(data)) return null;
    if (!Object.values(data).every((v) => typeof v === 'string')) return null;
    return data;
  }

  /** The decoded JSON answer (true when empty), or null after giving up. */
  async call(method, path, what, budgetS, body = undefined, signal = undefined) {
    const backoff = new Backoff({ baseS: 0.5, capS: 10 });
    const deadline = Date.now() + budgetS * 1000;
    for (;;) {
      if (signal?.aborted) return null; // given up by the caller (the bot is exiting)
      let response;
      try {
        response = await fetch(this.base + path, {
          method,
          headers: body === undefined ? this.headers : { ...this.headers, 'Content-Type': 'application/json' },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: signal
            ? AbortSignal.any([signal, AbortSignal.timeout(this.timeoutS * 1000)])
            : AbortSignal.timeout(this.timeoutS * 1000),
        });
        if (response.status >= 500 || response.status === 429) {
          await response.arrayBuffer().catch(() => null);
          throw new Transient(`HTTP ${response.status}`);
        }
      } catch (err) {
        const delay = backoff.nextDelay();
        const why = err instanceof Transient ? err.message : describeFetchError(err);
        if (Date.now() + delay * 1000 > deadline) {
          this.log.error(`${what}: giving up (${why})`);
          return null;
        }
        this.log.warn(`${what} failed (${why}); retrying in ${delay.toFixed(1)}s`);
        await sleep(delay * 1000, signal);
        continue;
      }
      const text = await response.text().catch(() => '');
      if ((response.status === 401 || response.status === 403) && this.exited) {
        this.log.info(`${what}: token revoked since the bot exited (HTTP ${response.status})`);
        return null;
      }
      if (response.status >= 400) {
        const hint = { 401: 'token rejected', 403: 'token rejected', 409: 'transition refused' }[response.status];
        this.log.error(`${what}: HTTP ${response.status} (${hint || 'not retried'}): ${text.slice(0, 500)}`);
        return null;
      }
      if (!text) return true;
      try {
        return JSON.parse(text);
      } catch {
        return true;
      }
    }
  }
}

function describeFetchError(err) {
  const cause = err?.cause;
  if (cause?.code) return `${cause.code}`;
  if (err?.name === 'TimeoutError') return 'timed out';
  return err?.message || String(err);
}

/** Stands in for ManagerClient when the bot disables callbacks: every call is a no-op. */
export class SilentClient {
  async sendEvent() {
    return true;
  }

  async pendingCommands() {
    return [];
  }

  async ack() {
    return true;
  }

  async fetchSecrets() {
    return null;
  }
}
