// In-process stand-ins for the manager's bot listener and for Redis, each on port 0.
import http from 'node:http';
import net from 'node:net';
import { encodeCommand, parseReply } from '../src/resp.js';
import { signedMessage, signingKey } from '../src/protocol.js';

export const TOKEN = 'bft_test-token';
export const BOT_ID = 'bot-1';

/** Poll `predicate` until it returns something truthy (every 10 ms), or fail after `timeoutMs`. */
export async function waitFor(predicate, { timeoutMs = 5000, what = 'a condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The manager's /internal/bots/{id}/… as the runtime sees it. */
export class FakeManager {
  constructor({ botId = BOT_ID, token = TOKEN, pageSize = 2 } = {}) {
    this.botId = botId;
    this.token = token;
    this.pageSize = pageSize;
    this.events = []; // callback bodies, in arrival order
    this.acks = []; // {id, body}
    this.pending = []; // command envelopes not yet acked (unsigned: HTTP is authenticated)
    this.secrets = {};
    this.pendingReads = 0;
    this.failNext = 0; // answer the next N requests 503
    this.onExited = null; // awaited before `exited` is answered (the manager ending the bot)
    this.server = http.createServer((req, res) => this.handle(req, res));
  }

  async start() {
    await new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${this.server.address().port}`;
    return this;
  }

  async stop() {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  eventNames() {
    return this.events.map((e) => e.event);
  }

  acksOf(id) {
    return this.acks.filter((a) => a.id === id);
  }

  async handle(req, res) {
    let raw = '';
    for await (const chunk of req) raw += chunk;
    const reply = (status, body) => {
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(body === undefined ? '' : JSON.stringify(body));
    };
    if (this.failNext > 0) {
      this.failNext -= 1;
      return reply(503, { detail: { code: 'unavailable' } });
    }
    if (req.headers.authorization !== `Bearer ${this.token}`) return reply(401, { detail: { code: 'unauthorized' } });
    const url = new URL(req.url, 'http://x');
    const prefix = `/internal/bots/${this.botId}`;
    if (!url.pathname.startsWith(prefix)) return reply(403, { detail: { code: 'forbidden' } });
    const path = url.pathname.slice(prefix.length);
    const body = raw ? JSON.parse(raw) : null;
    if (req.method === 'POST' && path === '/callbacks') {
      this.events.push(body);
      if (body.event === 'exited' && this.onExited) await this.onExited();
      return reply(200, { status: 'active', changed: true });
    }
    if (req.method === 'GET' && path === '/commands') {
      this.pendingReads += 1;
      const start = Number(url.searchParams.get('cursor') || 0);
      const items = this.pending.slice(start, start + this.pageSize);
      const next = start + this.pageSize < this.pending.length ? String(start + this.pageSize) : null;
      return reply(200, { items, next_cursor: next });
    }
    const ack = /^\/commands\/([^/]+)\/ack$/.exec(path);
    if (req.method === 'POST' && ack) {
      const id = decodeURIComponent(ack[1]);
      this.acks.push({ id, body });
      this.pending = this.pending.filter((c) => c.id !== id);
      return reply(200, { id, status: body.ok ? 'acked' : 'failed' });
    }
    if (req.method === 'GET' && path === '/secrets') return reply(200, this.secrets);
    return reply(404, { detail: { code: 'not_found' } });
  }
}

/** What the manager does once a bot reported `exited`: it revokes the bot's token and deletes
 * its Redis user, which drops the bot's connection; the answer to `exited` comes after. */
export function endLikeTheManager(manager, redis) {
  manager.onExited = async () => {
    manager.token = 'revoked';
    redis.dropConnections();
    await new Promise((resolve) => setTimeout(resolve, 300)); // time for a listener to notice
  };
}

/** The lines of a runtime's output logged at ERROR or WARNING. */
export function alarms(output) {
  return output.split('\n').filter((line) => / (ERROR|WARNING) /.test(line));
}

/** A Redis that knows AUTH, SELECT, SUBSCRIBE and PING, with a password and a user per bot. */
export class FakeRedis {
  constructor({ username = `botfleet-bot-${BOT_ID}`, password = TOKEN } = {}) {
    this.username = username;
    this.password = password;
    this.clients = new Set();
    this.subscriptions = 0; // SUBSCRIBE commands answered, over the server's life
    this.connections = 0; // connections accepted, over the server's life
    this.mute = false; // swallow everything (a connection that silently died)
    this.server = net.createServer((socket) => this.accept(socket));
  }

  async start(port = 0) {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', resolve);
    });
    this.port = this.server.address().port;
    this.url = `redis://${this.username}:${this.password}@127.0.0.1:${this.port}/0`;
    return this;
  }

  /** Close the listener and every connection; start(this.port) again to come back. */
  async stop() {
    for (const client of this.clients) client.socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
    this.server = net.createServer((socket) => this.accept(socket));
  }

  dropConnections() {
    for (const client of this.clients) client.socket.destroy();
  }

  subscribers(channel) {
    return [...this.clients].filter((c) => c.channels.has(channel)).length;
  }

  /** Publish raw text; the number of subscribers that got it. */
  publish(channel, text) {
    let count = 0;
    for (const client of this.clients) {
      if (client.channels.has(channel)) {
        client.socket.write(encodeCommand('message', channel, text));
        count += 1;
      }
    }
    return count;
  }

  /** Publish `fields` signed as the manager signs them, with the bot's token `token`. */
  publishSigned(channel, fields, token = TOKEN) {
    return this.publish(channel, signedMessage(fields, signingKey(token)));
  }

  accept(socket) {
    this.connections += 1;
    const client = { socket, channels: new Set(), authed: false, buffer: Buffer.alloc(0) };
    this.clients.add(client);
    socket.on('close', () => this.clients.delete(client));
    socket.on('error', () => {});
    socket.on('data', (chunk) => {
      if (this.mute) return;
      client.buffer = Buffer.concat([client.buffer, chunk]);
      for (;;) {
        const parsed = parseReply(client.buffer, 0);
        if (parsed === null) break;
        client.buffer = client.buffer.subarray(parsed[1]);
        this.command(client, parsed[0].map((b) => b.toString('utf8')));
      }
    });
  }

  command(client, [name, ...args]) {
    const write = (text) => client.socket.write(text);
    switch (name.toUpperCase()) {
      case 'AUTH': {
        const [user, pass] = args.length === 2 ? args : ['default', args[0]];
        if (user === this.username && pass === this.password) {
          client.authed = true;
          return write('+OK\r\n');
        }
        return write('-WRONGPASS invalid username-password pair or user is disabled.\r\n');
      }
      case 'SELECT':
        return write('+OK\r\n');
      case 'SUBSCRIBE':
        if (!client.authed) return write('-NOAUTH Authentication required.\r\n');
        for (const channel of args) {
          client.channels.add(channel);
          this.subscriptions += 1;
          const bulk = (text) => `$${Buffer.byteLength(text)}\r\n${text}\r\n`;
          write(`*3\r\n${bulk('subscribe')}${bulk(channel)}:${client.channels.size}\r\n`);
        }
        return undefined;
      case 'PING':
        return write(client.channels.size ? '*2\r\n$4\r\npong\r\n$0\r\n\r\n' : '+PONG\r\n');
      default:
        return write(`-NOPERM this user has no permissions to run the '${name}' command\r\n`);
    }
  }
}
