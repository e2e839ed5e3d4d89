// The base class every Node bot extends: a handful of async hooks the runtime calls in order.
import { MAX_REPORT_BYTES, UNKNOWN_ACTION, isPlainObject, jsonSize } from './protocol.js';

// Leave reasons the runtime reports in its `leaving` callback.
export const LEAVE_COMMAND = 'leave_requested';
export const LEAVE_SIGTERM = 'sigterm';
export const LEAVE_SIGINT = 'sigint';
export const LEAVE_BY_BOT = 'bot_leaving';

/** Throw from onCommand for an action the bot does not answer: the command fails with the error
 * `unknown_action` (the default onCommand throws it). */
export class UnknownAction extends Error {
  constructor(action) {
    super(`${UNKNOWN_ACTION}: the bot has no command ${JSON.stringify(action)}`);
    this.name = 'UnknownAction';
    this.action = action;
  }
}

/** Throw from onStart or run to end the bot `failed` with a reason of its own (a stable
 * snake_case code such as `platform_unauthorized`) instead of `crashed`; reported in `exited`
 * with exit code 1. */
export class BotFailed extends Error {
  constructor(reason, detail = '') {
    super(detail ? `${reason}: ${detail}` : reason);
    this.name = 'BotFailed';
    this.reason = reason;
    this.detail = detail;
  }
}

/**
 * Extend and override the hooks; the runtime owns callbacks, commands and signals.
 *
 * Order: onStart (return once joined; throwing reports `start_failed`), then run (the bot's work;
 * returning means a natural finish with exit 0, or the integer it returns; throwing reports
 * `crashed`). On a `leave` command, SIGTERM or requestLeave(), the runtime calls onLeave (within
 * the leave grace), waits a little for run to return, and exits 0. onReconfigure(config) may run
 * at any time: throw to refuse (the message goes back in the ack); afterwards this.config is the
 * new config. onCommand(action, payload) answers a custom command with a JSON value (its
 * `result`, at most 64 KiB). onSecrets(secrets) receives new secrets; this.secrets is the new set
 * afterwards. `await this.report({...})` tells the operator something (latest wins; 16 KiB).
 */
export class Bot {
  /** Set to false (on the class) to never call the manager back. */
  static callbacksEnabled = true;

  constructor({ botId = '', config = {}, secrets = {}, stateDir = null, log = console } = {}) {
    this.botId = botId;
    this.config = config;
    this.secrets = secrets;
    this.stateDir = stateDir;
    this.log = log;
    this.leaveReason = null;
    this.leaveDetail = null;
    this._leaveRequested = false;
    this._leave = new Promise((resolve) => {
      this._resolveLeave = resolve;
    });
    this._sendReport = null; // set by the runtime
  }

  async onStart() {}

  /** The bot's work. The default idles until a leave is requested. */
  async run() {
    await this.waitForLeave();
  }

  async onReconfigure(_config) {}

  async onCommand(action, _payload) {
    throw new UnknownAction(action);
  }

  async onSecrets(_secrets) {}

  async onLeave() {}

  /** Send `data` (a JSON object, at most 16 KiB) as the bot's latest report; true once the
   * manager took it. */
  async report(data) {
    if (!isPlainObject(data)) throw new TypeError('a report must be a JSON object');
    const size = jsonSize(data);
    if (size > MAX_REPORT_BYTES) {
      throw new RangeError(`a report is at most ${MAX_REPORT_BYTES} bytes of JSON, not ${size}`);
    }
    if (this._sendReport === null) return false;
    return this._sendReport(data);
  }

  /** Leave on the bot's own initiative; the runtime reports `leaving` with this detail. */
  requestLeave(reason = 'the bot decided to leave') {
    this._beginLeave(LEAVE_BY_BOT, reason);
  }

  get leaveRequested() {
    return this._leaveRequested;
  }

  /** Resolves once a leave was requested by a command, a signal or the bot itself. */
  waitForLeave() {
    return this._leave;
  }

  _beginLeave(reason, detail = null) {
    if (this._leaveRequested) return; // the first reason wins
    this._leaveRequested = true;
    this.leaveReason = reason;
    this.leaveDetail = detail;
    this._resolveLeave();
  }
}
