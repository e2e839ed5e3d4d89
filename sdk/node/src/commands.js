// Apply commands from the manager to the bot: one handler per action, each id at most once.
//
// Delivery is at least once (the manager re-publishes, pending commands are re-read on every
// reconnect), so the router remembers every id it applied and answers a repeat with the first
// outcome instead of applying it again. A custom command runs on its own: a slow one never holds
// up a leave or the next command.
import { LEAVE_COMMAND, UnknownAction } from './bot.js';
import {
  ACTION_LEAVE,
  ACTION_RECONFIGURE,
  ACTION_SECRETS,
  MAX_RESULT_BYTES,
  UNKNOWN_ACTION,
  describeError,
  jsonSize,
} from './protocol.js';

export class CommandRouter {
  constructor({ bot, client, log }) {
    this.bot = bot;
    this.client = client;
    this.log = log;
    this.outcomes = new Map(); // id -> {ok, error, result}: the ids already applied
    this.running = new Map(); // id -> promise: custom commands being answered
    this.configVersion = 0; // of the newest config applied
    this.cancelled = false;
    this.handlers = {
      [ACTION_RECONFIGURE]: (msg) => this.handleReconfigure(msg),
      [ACTION_LEAVE]: async () => ({ ok: true, error: null, result: null }),
      [ACTION_SECRETS]: (msg) => this.handleSecrets(msg),
    };
  }

  async handle(msg) {
    if (this.outcomes.has(msg.id)) {
      this.log.info(`command ${msg.id} (${msg.action}) already applied; acking again`);
      await this.ack(msg.id, this.outcomes.get(msg.id));
      return;
    }
    if (this.running.has(msg.id)) {
      this.log.info(`command ${msg.id} (${msg.action}) is still running`);
      return;
    }
    const handler = Object.hasOwn(this.handlers, msg.action) ? this.handlers[msg.action] : null;
    if (handler === null) {
      const answer = this.custom(msg).finally(() => this.running.delete(msg.id));
      this.running.set(msg.id, answer);
      return;
    }
    this.log.info(`command ${msg.id}: ${msg.action}`);
    const outcome = await handler(msg);
    this.outcomes.set(msg.id, outcome);
    await this.ack(msg.id, outcome);
    // Leaving starts only once the ack is out, so the manager never sees a leave unacked.
    if (msg.action === ACTION_LEAVE && outcome.ok) this.bot._beginLeave(LEAVE_COMMAND);
  }

  /** The bot is ending: custom commands still being answered are no longer acked (they
   * expire on the manager's side), as the Python runtime cancels them. */
  cancelRunning() {
    this.cancelled = true;
  }

  async ack(id, { ok, error, result }) {
    await this.client.ack(id, ok, error, result);
  }

  async custom(msg) {
    this.log.info(`command ${msg.id}: custom ${msg.action}`);
    const outcome = await this.handleCustom(msg);
    if (this.cancelled) return;
    this.outcomes.set(msg.id, outcome);
    await this.ack(msg.id, outcome);
  }

  /** The bot's onCommand: its JSON answer is the result, its exception the error. */
  async handleCustom(msg) {
    let result;
    try {
      result = await this.bot.onCommand(msg.action, { ...(msg.payload ?? {}) });
    } catch (err) {
      if (err instanceof UnknownAction) {
        this.log.warn(`command ${msg.id}: unknown action ${JSON.stringify(msg.action)}`);
        return { ok: false, error: UNKNOWN_ACTION, result: null };
      }
      this.log.warn(`command ${msg.id} (${msg.action}) failed: ${describeError(err)}`);
      return { ok: false, error: errorText(err), result: null };
    }
    if (result === undefined) result = null;
    let size;
    try {
      size = jsonSize(result);
    } catch (err) {
      return { ok: false, error: `result_not_json: the bot's answer is not JSON (${err.message})`, result: null };
    }
    if (size > MAX_RESULT_BYTES) {
      return { ok: false, error: `result_too_large: ${size} bytes, at most ${MAX_RESULT_BYTES}`, result: null };
    }
    return { ok: true, error: null, result };
  }

  async handleReconfigure(msg) {
    if (this.bot.leaveRequested) return { ok: false, error: 'the bot is leaving', result: null };
    if (msg.config == null) return { ok: false, error: 'reconfigure needs a config', result: null };
    const version = msg.config_version || 0;
    if (version && version <= this.configVersion) {
      // Delivered late: a newer config already holds; applying this one would go backwards.
      this.log.info(`command ${msg.id}: config ${version} superseded by ${this.configVersion}`);
      return { ok: true, error: null, result: null };
    }
    try {
      await this.bot.onReconfigure(msg.config);
    } catch (err) {
      this.log.warn(`command ${msg.id}: reconfigure refused: ${describeError(err)}`);
      return { ok: false, error: errorText(err), result: null };
    }
    this.bot.config = msg.config;
    this.configVersion = Math.max(this.configVersion, version);
    return { ok: true, error: null, result: null };
  }

  /** Fetch the new secrets over HTTP with the bot's token (the command carries none), then hand
   * them to the bot. Never logs them. */
  async handleSecrets(msg) {
    const secrets = await this.client.fetchSecrets();
    if (secrets === null) {
      return { ok: false, error: 'secrets_unavailable: could not read the secrets from the manager', result: null };
    }
    try {
      await this.bot.onSecrets(secrets);
    } catch (err) {
      this.log.warn(`command ${msg.id}: new secrets refused: ${err?.name || 'Error'}`);
      return { ok: false, error: errorText(err), result: null };
    }
    this.bot.secrets = secrets;
    return { ok: true, error: null, result: null };
  }
}

function errorText(err) {
  if (err instanceof Error) return err.message || err.name || 'Error';
  return String(err);
}
