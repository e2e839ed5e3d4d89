// Types of @botfleet/runtime (hand-written; the package has no build step).

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

export interface Logger {
  debug(...parts: unknown[]): void;
  info(...parts: unknown[]): void;
  warn(...parts: unknown[]): void;
  error(...parts: unknown[]): void;
}

export interface BotInit {
  botId?: string;
  config?: JsonObject;
  secrets?: Record<string, string>;
  stateDir?: string | null;
  log?: Logger;
}

/** Extend and override the hooks; the runtime owns callbacks, commands and signals. */
export class Bot {
  /** Set to false on the class to never call the manager back. */
  static callbacksEnabled: boolean;
  constructor(init?: BotInit);
  readonly botId: string;
  /** The current config; replaced after onReconfigure succeeds. */
  config: JsonObject;
  /** The current secrets; replaced after onSecrets succeeds. */
  secrets: Record<string, string>;
  /** BOTFLEET_STATE_DIR: the bot's persistent directory, or null without a state_key. */
  stateDir: string | null;
  log: Logger;
  leaveReason: string | null;
  leaveDetail: string | null;
  /** Join or connect; resolve when running. Throwing reports start_failed (BotFailed: its reason). */
  onStart(): Promise<void>;
  /** The bot's work; resolving means a natural finish (exit 0, or the integer returned). */
  run(): Promise<number | void | null>;
  /** Apply a new config; throw to refuse it (the message goes back in the ack). */
  onReconfigure(config: JsonObject): Promise<void>;
  /** Answer a custom command with a JSON value (its result, at most 64 KiB); throw to fail it. */
  onCommand(action: string, payload: JsonObject): Promise<JsonValue | void>;
  /** Apply new secrets; throw to fail the secrets command. */
  onSecrets(secrets: Record<string, string>): Promise<void>;
  /** Leave gracefully, within BOTFLEET_LEAVE_GRACE_S. */
  onLeave(): Promise<void>;
  /** Send a report (a JSON object, at most 16 KiB); true once the manager took it. */
  report(data: JsonObject): Promise<boolean>;
  /** Leave on the bot's own initiative. */
  requestLeave(reason?: string): void;
  readonly leaveRequested: boolean;
  /** Resolves once a leave was requested by a command, a signal or the bot itself. */
  waitForLeave(): Promise<void>;
}

/** Throw from onStart or run to end the bot failed with a reason of its own (exit code 1). */
export class BotFailed extends Error {
  constructor(reason: string, detail?: string);
  readonly reason: string;
  readonly detail: string;
}

/** Throw from onCommand for an action the bot does not answer: error `unknown_action`. */
export class UnknownAction extends Error {
  constructor(action: string);
  readonly action: string;
}

export interface RunOptions {
  /** The environment to read (default: process.env). */
  environ?: Record<string, string | undefined>;
  /** Exit the process with the bot's exit code when it ends (default: true). */
  exit?: boolean;
}

/** Run one bot as the manager launched it; resolves to its exit code (then exits, by default). */
export function run(BotClass: new (init: BotInit) => Bot, options?: RunOptions): Promise<number>;

export const ACTION_RECONFIGURE: 'reconfigure';
export const ACTION_LEAVE: 'leave';
export const ACTION_SECRETS: 'secrets';
export const MAX_REPORT_BYTES: number;
export const MAX_RESULT_BYTES: number;
/** The HMAC key of a bot's commands: hex SHA-256 of its token. */
export function signingKey(token: string): string;
/** A raw Redis message's command when the manager signed it under `key`, else null. */
export function verifyMessage(
  raw: string | Uint8Array,
  key: string,
): {
  id: string;
  action: string;
  issued_at: string;
  config: JsonObject | null;
  config_version: number | null;
  payload: JsonObject | null;
} | null;
