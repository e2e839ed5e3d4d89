// The environment a bot is started with (docs/protocol.md, "Environment"), parsed up front so a
// misconfigured launch fails at once with the variable's name.
import { closeSync, readFileSync } from 'node:fs';
import { commandChannel } from './protocol.js';

export const BOT_ID = 'BOTFLEET_BOT_ID';
export const BOT_TOKEN = 'BOTFLEET_BOT_TOKEN';
export const CALLBACK_URL = 'BOTFLEET_CALLBACK_URL';
export const REDIS_URL = 'BOTFLEET_REDIS_URL';
export const COMMAND_CHANNEL = 'BOTFLEET_COMMAND_CHANNEL';
export const BOT = 'BOTFLEET_BOT';
export const BOT_CONFIG = 'BOTFLEET_BOT_CONFIG';
export const BOT_SECRETS = 'BOTFLEET_BOT_SECRETS';
export const HEARTBEAT_S = 'BOTFLEET_HEARTBEAT_S';
export const STATE_DIR = 'BOTFLEET_STATE_DIR';
export const LEAVE_GRACE_S = 'BOTFLEET_LEAVE_GRACE_S';
export const SECRET_ENV_FD = 'BOTFLEET_SECRET_ENV_FD';

export const ENV_NAMES = Object.freeze([
  BOT_ID,
  BOT_TOKEN,
  CALLBACK_URL,
  REDIS_URL,
  COMMAND_CHANNEL,
  BOT,
  BOT_CONFIG,
  BOT_SECRETS,
  HEARTBEAT_S,
  STATE_DIR,
  LEAVE_GRACE_S,
  SECRET_ENV_FD,
]);

export const DEFAULT_HEARTBEAT_S = 10;
export const DEFAULT_LEAVE_GRACE_S = 20;

export class RuntimeConfigError extends Error {
  constructor(message) {
    super(message);
    this.name = 'RuntimeConfigError';
  }
}

/**
 * `environ` plus the secret variables read from the pipe BOTFLEET_SECRET_ENV_FD names (one JSON
 * object of strings), if it names one. The pipe is read to its end and closed; the secrets are
 * never put into process.env, so the bot's own children do not inherit them.
 */
export function withSecretEnv(environ, { readFd = readAll } = {}) {
  const merged = { ...environ };
  const rawFd = String(merged[SECRET_ENV_FD] ?? '').trim();
  delete merged[SECRET_ENV_FD];
  if (!rawFd) return merged;
  if (!/^\d+$/.test(rawFd)) {
    throw new RuntimeConfigError(`${SECRET_ENV_FD} must be a file descriptor number`);
  }
  let data;
  try {
    data = readFd(Number(rawFd));
  } catch (err) {
    throw new RuntimeConfigError(`cannot read ${SECRET_ENV_FD} (${rawFd}): ${err.code || err.message}`);
  }
  let secretEnv = {};
  if (data.trim()) {
    try {
      secretEnv = JSON.parse(data);
    } catch (err) {
      throw new RuntimeConfigError(`${SECRET_ENV_FD} is not valid JSON: ${err.message}`);
    }
  }
  if (!isStringMap(secretEnv)) {
    throw new RuntimeConfigError(`${SECRET_ENV_FD} must carry a JSON object of strings`);
  }
  return { ...merged, ...secretEnv };
}

function readAll(fd) {
  try {
    return readFileSync(fd, 'utf8');
  } finally {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
  }
}

/** The runtime's settings from the environment. BOTFLEET_BOT is informational for a Node bot
 * (the class is the one given to run()), so it is not required. */
export function parseEnv(environ) {
  const botId = required(environ, BOT_ID);
  return {
    botId,
    token: required(environ, BOT_TOKEN),
    callbackUrl: required(environ, CALLBACK_URL).replace(/\/+$/, ''),
    redisUrl: required(environ, REDIS_URL),
    commandChannel: String(environ[COMMAND_CHANNEL] ?? '').trim() || commandChannel(botId),
    bot: String(environ[BOT] ?? '').trim() || null,
    config: jsonObject(environ, BOT_CONFIG),
    secrets: secrets(environ),
    heartbeatS: seconds(environ, HEARTBEAT_S, DEFAULT_HEARTBEAT_S),
    leaveGraceS: seconds(environ, LEAVE_GRACE_S, DEFAULT_LEAVE_GRACE_S),
    stateDir: absolutePath(environ, STATE_DIR),
  };
}

function isStringMap(value) {
  return (
    value !== null &&
    typeof value === 'object' &&
    !Array.isArray(value) &&
    Object.values(value).every((v) => typeof v === 'string')
  );
}

function required(environ, name) {
  const value = String(environ[name] ?? '').trim();
  if (!value) throw new RuntimeConfigError(`${name} is required but not set`);
  return value;
}

function jsonObject(environ, name) {
  const raw = String(environ[name] ?? '').trim();
  if (!raw) return {};
  let value;
  try {
    value = JSON.parse(raw);
  } catch {
    // never echo the text: it may hold secrets
    throw new RuntimeConfigError(`${name} is not valid JSON`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new RuntimeConfigError(`${name} must be a JSON object`);
  }
  return value;
}

function secrets(environ) {
  const value = jsonObject(environ, BOT_SECRETS);
  if (!isStringMap(value)) throw new RuntimeConfigError(`${BOT_SECRETS} must map names to strings`);
  return value;
}

function absolutePath(environ, name) {
  const raw = String(environ[name] ?? '').trim();
  if (!raw) return null;
  if (!raw.startsWith('/')) throw new RuntimeConfigError(`${name} must be an absolute path, got ${JSON.stringify(raw)}`);
  return raw;
}

function seconds(environ, name, fallback) {
  const raw = String(environ[name] ?? '').trim();
  if (!raw) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value)) throw new RuntimeConfigError(`${name} must be a number, got ${JSON.stringify(raw)}`);
  if (!(value > 0)) throw new RuntimeConfigError(`${name} must be positive, got ${JSON.stringify(raw)}`);
  return value;
}
