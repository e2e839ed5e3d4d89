// The runtime's main loop: start the bot, report its lifecycle, apply commands, leave cleanly.
// The process exit code is always the `exit_code` reported in the `exited` callback.
import { LEAVE_BY_BOT, LEAVE_SIGINT, LEAVE_SIGTERM, BotFailed } from './bot.js';
import { ManagerClient, SilentClient } from './client.js';
import { CommandRouter } from './commands.js';
import { RuntimeConfigError, parseEnv, withSecretEnv } from './env.js';
import {
  EVENT_EXITED,
  EVENT_HEARTBEAT,
  EVENT_LEAVING,
  EVENT_REPORT,
  EVENT_STARTED,
  describeError,
  signingKey,
  verifyMessage,
} from './protocol.js';
import { RedisError, Subscription } from './resp.js';
import { Backoff, sleep } from './backoff.js';
import { makeLogger } from './log.js';

export const RUN_RETURN_S = 5; // how long run() may take to return after onLeave
export const REPORT_FLUSH_S = 10; // how long earlier events may hold up `exited`
export const REDIS_POLL_S = 15; // also the health-check period of the Redis connection
export const EXIT_CONFIG_ERROR = 2; // no callback possible: a non-zero exit without `exited`
export const LISTENER_STOP_S = 3; // how long the command listener may take to stop at the end

/** A promise with its outcome readable once settled. */
function track(start) {
  const state = { done: false, error: undefined, failed: false, value: undefined };
  state.promise = Promise.resolve()
    .then(start)
    .then(
      (value) => Object.assign(state, { done: true, value }),
      (error) => Object.assign(state, { done: true, failed: true, error }),
    );
  return state;
}

export class Runner {
  constructor(env, bot, client, { log = makeLogger('botfleet.runtime'), timings = {} } = {}) {
    this.env = env;
    this.bot = bot;
    this.client = client;
    this.log = log;
    this.timings = { runReturnS: RUN_RETURN_S, reportFlushS: REPORT_FLUSH_S, redisPollS: REDIS_POLL_S, ...timings };
    this.router = new CommandRouter({ bot, client, log });
    bot._sendReport = (data) => this.client.sendEvent(EVENT_REPORT, { data });
    this.reports = []; // lifecycle events, sent in order
    this.lastReport = Promise.resolve();
    this.closing = new AbortController(); // aborted once the outcome is decided
    this.heartbeatTimer = null;
    this.subscription = null;
    this.listener = null; // the command listener's promise, while it runs
    this.commandKey = null;
    this.exitSent = false;
  }

  /** Start, supervise and stop the bot; resolve to the exit code that was reported. */
  async run() {
    const removeSignals = this.installSignalHandlers();
    this.listener = this.listenForCommands().catch((err) =>
      this.log.warn(`command listener ended with ${describeError(err)}`),
    );
    try {
      const start = track(() => this.bot.onStart());
      if (await this.leaveFirst(start)) return await this.leave(null);
      if (start.failed) {
        const err = start.error;
        if (err instanceof BotFailed) {
          this.log.error(`onStart failed: ${err.message}`);
          return await this.exit(1, err.reason, err.detail || null);
        }
        this.log.error(`onStart failed: ${err?.stack || describeError(err)}`);
        return await this.exit(1, 'start_failed', describeError(err));
      }
      this.log.info('bot started');
      this.report(EVENT_STARTED);
      this.startHeartbeats();
      const work = track(() => this.bot.run());
      if (await this.leaveFirst(work)) return await this.leave(work);
      return await this.finished(work);
    } finally {
      await this.stopCommands(); // done by exit() already, unless it never ran
      removeSignals();
    }
  }

  /** No command is read or answered from here on: heartbeats, custom commands being answered
   * and the command listener stop. Called before `exited` is sent: a manager may end the bot as
   * soon as it has it, revoking the token and deleting the bot's Redis user, and a listener still
   * running would see its connection drop, read the pending commands and log the 401. */
  async stopCommands() {
    this.closing.abort();
    this.stopHeartbeats();
    this.router.cancelRunning();
    this.subscription?.close();
    const listener = this.listener;
    this.listener = null;
    if (listener === null) return;
    const waited = new AbortController();
    await Promise.race([listener, sleep(LISTENER_STOP_S * 1000, waited.signal)]);
    waited.abort(); // no timer left behind
  }

  /** Wait for `task` or a leave request; true if a leave was requested. */
  async leaveFirst(task) {
    await Promise.race([task.promise, this.bot.waitForLeave()]);
    return this.bot.leaveRequested;
  }

  async finished(work) {
    if (work.failed) {
      const err = work.error;
      if (err instanceof BotFailed) {
        this.log.error(`the bot failed: ${err.message}`); // declared by the bot: no stack
        return this.exit(1, err.reason, err.detail || null);
      }
      this.log.error(`run() crashed: ${err?.stack || describeError(err)}`);
      return this.exit(1, 'crashed', describeError(err));
    }
    const code = work.value ?? 0;
    if (!Number.isInteger(code) || code < 0 || code > 255) {
      return this.exit(1, 'bot_error', `run() returned ${JSON.stringify(code)}, not an exit code`);
    }
    return this.exit(code, code === 0 ? 'finished' : 'bot_error');
  }

  /** The graceful path: report `leaving`, onLeave within the grace, let run() return, exit 0. */
  async leave(work) {
    const reason = this.bot.leaveReason || LEAVE_BY_BOT;
    this.log.info(`leaving (${reason})`);
    this.report(EVENT_LEAVING, { reason, detail: this.bot.leaveDetail });
    let failure = null;
    const onLeave = track(() => this.bot.onLeave());
    const graceS = this.env.leaveGraceS;
    await Promise.race([onLeave.promise, sleep(graceS * 1000)]);
    if (!onLeave.done) {
      this.log.warn(`onLeave took longer than ${graceS}s; exiting anyway`);
    } else if (onLeave.failed) {
      this.log.error(`onLeave failed: ${onLeave.error?.stack || describeError(onLeave.error)}`);
      failure = describeError(onLeave.error);
    }
    if (work !== null && !work.done) {
      await Promise.race([work.promise, sleep(this.timings.runReturnS * 1000)]);
      if (!work.done) this.log.warn(`run() did not return within ${this.timings.runReturnS}s of leaving`);
    }
    if (work?.failed && !(work.error instanceof BotFailed)) {
      this.log.warn(`run() threw while leaving: ${describeError(work.error)}`);
    }
    if (failure !== null) return this.exit(1, 'leave_failed', failure);
    return this.exit(0, 'left');
  }

  async exit(code, reason, detail = null) {
    this.stopHeartbeats(); // no heartbeat may follow `exited`
    this.log.info(`exiting with code ${code} (${reason})`);
    // `exited` carries the outcome: earlier events may wait a little, not a whole budget.
    const flushed = Promise.allSettled(this.reports);
    const late = new AbortController();
    const timer = setTimeout(() => late.abort(), this.timings.reportFlushS * 1000);
    await Promise.race([flushed, new Promise((resolve) => late.signal.addEventListener('abort', resolve))]);
    clearTimeout(timer);
    this.cancelReports.abort();
    await this.stopCommands(); // no command read or ack may follow `exited` either
    this.exitSent = true;
    await this.client.sendEvent(EVENT_EXITED, { exitCode: code, reason, detail });
    return code;
  }

  get cancelReports() {
    this._cancelReports ??= new AbortController();
    return this._cancelReports;
  }

  /** Send a lifecycle event after the previous one, without holding up the bot. */
  report(event, fields = {}) {
    const previous = this.lastReport;
    const signal = this.cancelReports.signal;
    const sent = previous.then(() => (signal.aborted ? false : this.client.sendEvent(event, { ...fields, signal })));
    this.lastReport = sent.catch(() => false);
    this.reports.push(this.lastReport);
    return sent;
  }

  startHeartbeats() {
    const beat = () => {
      this.heartbeatTimer = setTimeout(async () => {
        try {
          await this.client.sendEvent(EVENT_HEARTBEAT);
        } catch (err) {
          this.log.error(`heartbeat failed: ${describeError(err)}`);
        }
        if (this.heartbeatTimer !== null) beat();
      }, this.env.heartbeatS * 1000);
    };
    beat();
  }

  stopHeartbeats() {
    clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  installSignalHandlers() {
    const handlers = [
      ['SIGTERM', LEAVE_SIGTERM],
      ['SIGINT', LEAVE_SIGINT],
    ].map(([sig, reason]) => {
      const handler = () => {
        if (this.bot.leaveRequested) this.log.info(`${sig} received; already leaving`);
        else {
          this.log.info(`${sig} received; leaving gracefully`);
          this.bot._beginLeave(reason);
        }
      };
      process.on(sig, handler);
      return [sig, handler];
    });
    return () => handlers.forEach(([sig, handler]) => process.off(sig, handler));
  }

  /** Follow the command channel for the whole life of the bot, reconnecting with backoff. Every
   * reconnect re-reads the pending commands it may have missed; while Redis is down they are
   * read over HTTP before each retry. */
  async listenForCommands() {
    const backoff = new Backoff({ baseS: 0.5, capS: 30 });
    while (!this.closing.signal.aborted) {
      try {
        await this.followChannel(backoff);
      } catch (err) {
        if (this.closing.signal.aborted) return;
        const delay = backoff.nextDelay();
        if (err instanceof RedisError || err?.code) {
          this.log.warn(`command channel down (${describeError(err)}); retry in ${delay.toFixed(1)}s`);
          await this.applyPending();
        } else {
          this.log.error(`command listener failed; restarting it: ${err?.stack || err}`);
        }
        await sleep(delay * 1000, this.closing.signal);
      }
    }
  }

  async applyPending() {
    for (const command of await this.client.pendingCommands()) {
      if (this.closing.signal.aborted) return;
      await this.router.handle(command);
    }
  }

  async followChannel(backoff) {
    const subscription = new Subscription(this.env.redisUrl, { healthCheckS: this.timings.redisPollS });
    this.subscription = subscription;
    try {
      await subscription.connect();
      // Subscribe before reading pending commands, so nothing published after is missed.
      await subscription.subscribe(this.env.commandChannel);
      this.log.info(`listening for commands on ${this.env.commandChannel}`);
      backoff.reset();
      await this.applyPending();
      while (!this.closing.signal.aborted) {
        const message = await subscription.nextMessage(this.timings.redisPollS);
        if (message === null) continue;
        const command = this.authenticCommand(message.data);
        if (command !== null) await this.router.handle(command);
      }
    } finally {
      subscription.close();
    }
  }

  /** The command in a Redis message, or null (logged, without the payload) when it is not
   * signed by the manager for this bot: anyone who can publish on the channel could have sent it. */
  authenticCommand(raw) {
    this.commandKey ??= signingKey(this.env.token);
    const command = verifyMessage(raw, this.commandKey);
    if (command === null) this.log.warn('dropping a command message that is malformed or not signed by the manager');
    return command;
  }
}

/**
 * Run one bot the way the manager launched it: read the environment (and the secret pipe), start
 * the bot, follow its commands until it leaves or finishes, and resolve to its exit code. With
 * `exit: true` (the default) the process then exits with that code.
 */
export async function run(BotClass, { environ = process.env, exit = true, timings = {}, readFd } = {}) {
  const code = await runBot(BotClass, { environ, timings, readFd });
  if (exit) process.exit(code);
  return code;
}

async function runBot(BotClass, { environ, timings, readFd }) {
  const log = makeLogger('botfleet.runtime');
  let env;
  try {
    env = parseEnv(withSecretEnv(environ, readFd ? { readFd } : {}));
  } catch (err) {
    if (!(err instanceof RuntimeConfigError)) throw err;
    log.error(`invalid runtime configuration: ${err.message}`);
    return EXIT_CONFIG_ERROR;
  }
  const manager = () =>
    new ManagerClient({ baseUrl: env.callbackUrl, botId: env.botId, token: env.token, log, budgets: timings.budgets });
  let bot;
  try {
    bot = new BotClass({
      botId: env.botId,
      config: env.config,
      secrets: env.secrets,
      stateDir: env.stateDir,
      log: makeLogger(`bot.${env.bot || BotClass.name}`),
    });
  } catch (err) {
    log.error(`cannot create the bot: ${err?.stack || describeError(err)}`);
    await manager().sendEvent(EVENT_EXITED, { exitCode: 1, reason: 'start_failed', detail: describeError(err) });
    return 1;
  }
  const enabled = BotClass.callbacksEnabled !== false;
  if (!enabled) log.info('callbacks disabled by the bot: the manager will hear nothing');
  const client = enabled ? manager() : new SilentClient();
  log.info(`starting bot ${BotClass.name} as ${env.botId}`);
  const runner = new Runner(env, bot, client, { log, timings });
  // An error nothing awaited (a callback's throw, a forgotten promise) ends the bot `crashed`
  // with its reason reported, instead of node's bare exit 1.
  const fatal = new Promise((resolve) => {
    runner.onFatal = resolve;
  });
  const onFatal = (err) => {
    log.error(`uncaught error: ${err?.stack || describeError(err)}`);
    runner.onFatal(err);
  };
  process.on('uncaughtException', onFatal);
  process.on('unhandledRejection', onFatal);
  try {
    const outcome = await Promise.race([runner.run().then((code) => ({ code })), fatal.then((err) => ({ err }))]);
    if ('code' in outcome) return outcome.code;
    await runner.stopCommands();
    if (!runner.exitSent) {
      runner.exitSent = true;
      await client.sendEvent(EVENT_EXITED, { exitCode: 1, reason: 'crashed', detail: describeError(outcome.err) });
    }
    return 1;
  } finally {
    process.off('uncaughtException', onFatal);
    process.off('unhandledRejection', onFatal);
  }
}
