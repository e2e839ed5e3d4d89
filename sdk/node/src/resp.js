// Subscribe to one Redis channel: the little of Redis a bot uses (AUTH, SELECT, SUBSCRIBE, PING),
// spoken as RESP2 over node:net (node:tls for rediss://). A bot's Redis user may run nothing else.
//
// A connection that answers nothing for two health-check periods (a PING is sent after the first)
// counts as dead, so a silently dropped connection is noticed without TCP keepalive's hours.
import net from 'node:net';
import tls from 'node:tls';

export const CONNECT_TIMEOUT_S = 5;

export class RedisError extends Error {
  constructor(message) {
    super(message);
    this.name = 'RedisError';
  }
}

export class RedisConnectionError extends RedisError {
  constructor(message) {
    super(message);
    this.name = 'RedisConnectionError';
  }
}

/** redis://[user[:password]@]host[:port][/db], rediss://… (TLS), unix:///path?db=N; `?password=`,
 * `?username=` and `?db=` are honoured as redis-py does. */
export function parseRedisUrl(url) {
  let parts;
  try {
    parts = new URL(url);
  } catch {
    throw new RedisError('the Redis URL cannot be parsed');
  }
  const scheme = parts.protocol.replace(/:$/, '');
  if (!['redis', 'rediss', 'unix'].includes(scheme)) {
    throw new RedisError('the Redis URL must start with redis://, rediss:// or unix://');
  }
  const query = parts.searchParams;
  const password = parts.password ? decodeURIComponent(parts.password) : query.get('password');
  const username = parts.username ? decodeURIComponent(parts.username) : query.get('username');
  const path = scheme === 'unix' ? decodeURIComponent(parts.pathname) : '';
  const db = query.get('db') || (scheme !== 'unix' ? parts.pathname.replace(/^\/+|\/+$/g, '') : '') || '0';
  if (!/^\d+$/.test(db)) throw new RedisError("the Redis URL's database must be a number");
  return {
    tls: scheme === 'rediss',
    host: (parts.hostname || 'localhost').replace(/^\[|\]$/g, ''),
    port: parts.port ? Number(parts.port) : 6379,
    path,
    username: username || null,
    password: password ?? null,
    db: Number(db),
  };
}

/** Encode one command as a RESP2 array of bulk strings. */
export function encodeCommand(...args) {
  const out = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const data = Buffer.isBuffer(arg) ? arg : Buffer.from(String(arg), 'utf8');
    out.push(Buffer.from(`$${data.length}\r\n`), data, Buffer.from('\r\n'));
  }
  return Buffer.concat(out);
}

/** One RESP2 value from `buf` at `offset`: [value, next offset], or null while incomplete.
 * Simple strings and bulk strings are Buffers; an error reply is {error: text}. */
export function parseReply(buf, offset = 0) {
  const end = buf.indexOf('\r\n', offset);
  if (end < 0) return null;
  const kind = String.fromCharCode(buf[offset]);
  const rest = buf.subarray(offset + 1, end).toString('utf8');
  const next = end + 2;
  switch (kind) {
    case '+':
      return [Buffer.from(rest, 'utf8'), next];
    case '-':
      return [{ error: rest }, next];
    case ':':
      return [Number(rest), next];
    case '$': {
      const size = Number(rest);
      if (size < 0) return [null, next];
      if (buf.length < next + size + 2) return null;
      return [buf.subarray(next, next + size), next + size + 2];
    }
    case '*': {
      const count = Number(rest);
      if (count < 0) return [null, next];
      const items = [];
      let at = next;
      for (let k = 0; k < count; k++) {
        const item = parseReply(buf, at);
        if (item === null) return null;
        items.push(item[0]);
        at = item[1];
      }
      return [items, at];
    }
    default:
      throw new RedisConnectionError(`not a RESP reply: ${JSON.stringify(buf.subarray(offset, offset + 40).toString())}`);
  }
}

/** One connection subscribed to a channel; nextMessage() reads what is published. */
export class Subscription {
  constructor(url, { healthCheckS = 15 } = {}) {
    this.url = url;
    this.healthCheckS = healthCheckS;
    this.socket = null;
    this.buffer = Buffer.alloc(0);
    this.replies = [];
    this.waiter = null;
    this.failure = null;
    this.pinged = false;
  }

  async connect() {
    const target = parseRedisUrl(this.url);
    await new Promise((resolve, reject) => {
      const onError = (err) => {
        cleanup();
        socket.destroy();
        reject(new RedisConnectionError(`cannot connect to Redis: ${err.message}`));
      };
      const timer = setTimeout(
        () => onError(new Error('timed out')),
        CONNECT_TIMEOUT_S * 1000,
      );
      const event = target.tls ? 'secureConnect' : 'connect';
      const options = target.path
        ? { path: target.path }
        : { host: target.host, port: target.port, servername: target.tls ? target.host : undefined };
      const socket = target.tls ? tls.connect(options) : net.connect(options);
      // close() while connecting (the bot is ending) destroys the socket: no `error` follows.
      const onClose = () => onError(new Error('closed while connecting'));
      const cleanup = () => {
        clearTimeout(timer);
        socket.off('error', onError);
        socket.off('close', onClose);
        socket.off(event, onConnect);
      };
      const onConnect = () => {
        cleanup();
        resolve();
      };
      socket.once('error', onError);
      socket.once('close', onClose);
      socket.once(event, onConnect);
      this.socket = socket;
    });
    if (!target.path) this.socket.setKeepAlive(true);
    this.socket.on('data', (chunk) => this.onData(chunk));
    this.socket.on('error', (err) => this.fail(`Redis connection lost: ${err.message}`));
    this.socket.on('close', () => this.fail('Redis connection lost: closed'));
    if (target.password !== null) {
      const auth = target.username ? [target.username, target.password] : [target.password];
      await this.command('AUTH', ...auth);
    }
    if (target.db) await this.command('SELECT', String(target.db));
  }

  async subscribe(channel) {
    this.send('SUBSCRIBE', channel);
    const reply = await this.readReply(CONNECT_TIMEOUT_S);
    if (!(Array.isArray(reply) && String(reply[0]) === 'subscribe')) {
      throw new RedisError(`unexpected answer to SUBSCRIBE: ${String(reply).slice(0, 200)}`);
    }
  }

  /** The next published message as {channel, data} (Buffers), or null when nothing came within
   * `timeoutS` (or what came was a PONG or a confirmation). Throws RedisConnectionError when the
   * connection is lost, or silent for two health-check periods. */
  async nextMessage(timeoutS) {
    const reply = await this.readReply(Math.min(timeoutS, this.healthCheckS), { orNull: true });
    if (reply === undefined) {
      if (this.pinged) throw new RedisConnectionError('Redis stopped answering (health check)');
      this.send('PING');
      this.pinged = true;
      return null;
    }
    this.pinged = false;
    if (Array.isArray(reply) && reply.length === 3 && String(reply[0]) === 'message') {
      return { channel: reply[1], data: reply[2] };
    }
    return null;
  }

  close() {
    const socket = this.socket;
    this.socket = null;
    this.fail('the Redis connection is closed');
    if (socket) socket.destroy();
  }

  async command(...args) {
    this.send(...args);
    return this.readReply(CONNECT_TIMEOUT_S);
  }

  send(...args) {
    if (this.failure || !this.socket || this.socket.destroyed) {
      throw new RedisConnectionError(this.failure || 'the Redis connection is closed');
    }
    this.socket.write(encodeCommand(...args));
  }

  onData(chunk) {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    let offset = 0;
    try {
      for (;;) {
        const parsed = parseReply(this.buffer, offset);
        if (parsed === null) break;
        this.replies.push(parsed[0]);
        offset = parsed[1];
      }
    } catch (err) {
      this.fail(err.message);
      this.socket?.destroy();
      return;
    }
    this.buffer = this.buffer.subarray(offset);
    this.wake();
  }

  fail(message) {
    if (!this.failure) this.failure = message;
    this.wake();
  }

  wake() {
    const waiter = this.waiter;
    this.waiter = null;
    if (waiter) waiter();
  }

  /** The next reply; an error reply throws RedisError. With `orNull`, undefined on a timeout;
   * without it, a timeout is a lost connection. */
  async readReply(timeoutS, { orNull = false } = {}) {
    if (!this.replies.length && !this.failure) {
      await new Promise((resolve) => {
        const timer = setTimeout(() => {
          this.waiter = null;
          resolve();
        }, timeoutS * 1000);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    if (this.replies.length) {
      const reply = this.replies.shift();
      if (reply && typeof reply === 'object' && 'error' in reply) throw new RedisError(reply.error);
      return reply;
    }
    if (this.failure) throw new RedisConnectionError(this.failure);
    if (orNull) return undefined;
    throw new RedisConnectionError('Redis did not answer in time');
  }
}
