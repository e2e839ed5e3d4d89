// The runtime against a fake manager and a fake Redis, in this process: lifecycle, commands
// (signed, applied once, pending on every reconnect), heartbeats, reports, the leave grace.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, test } from 'node:test';
import { Bot, BotFailed, run } from '../index.js';
import { BOT_ID, FakeManager, FakeRedis, TOKEN, alarms, endLikeTheManager, waitFor } from './fakes.js';

const CHANNEL = `bot_commands:${BOT_ID}`;
const FAST = { runReturnS: 0.5, reportFlushS: 1, redisPollS: 0.3, budgets: { lifecycle: 3, heartbeat: 1, report: 1 } };

let manager;
let redis;

beforeEach(async () => {
  manager = await new FakeManager().start();
  redis = await new FakeRedis().start();
});

afterEach(async () => {
  await manager.stop();
  await redis.stop();
});

function environ(extra = {}) {
  return {
    BOTFLEET_BOT_ID: BOT_ID,
    BOTFLEET_BOT_TOKEN: TOKEN,
    BOTFLEET_CALLBACK_URL: manager.url,
    BOTFLEET_REDIS_URL: redis.url,
    BOTFLEET_COMMAND_CHANNEL: CHANNEL,
    BOTFLEET_BOT: 'node-echo',
    BOTFLEET_BOT_CONFIG: JSON.stringify({ greeting: 'hi' }),
    BOTFLEET_HEARTBEAT_S: '0.05',
    BOTFLEET_LEAVE_GRACE_S: '0.5',
    ...extra,
  };
}

function start(BotClass, extra = {}) {
  return run(BotClass, { environ: environ(extra), exit: false, timings: FAST });
}

let sequence = 0;
function command(action, fields = {}) {
  sequence += 1;
  return { id: `cmd-${sequence}`, action, issued_at: new Date().toISOString(), ...fields };
}

async function subscribed() {
  await waitFor(() => redis.subscribers(CHANNEL) === 1, { what: 'the bot to subscribe' });
}

/** Like the manager: store the command (pending), then publish it. */
function send(fields) {
  manager.pending.push(fields);
  return redis.publishSigned(CHANNEL, fields);
}

async function acked(id) {
  return (await waitFor(() => manager.acksOf(id)[0], { what: `the ack of ${id}` })).body;
}

class Recorder extends Bot {
  constructor(init) {
    super(init);
    this.calls = [];
  }

  async onReconfigure(config) {
    this.calls.push(['reconfigure', config]);
    if (config.refuse) throw new Error('refused by the bot');
  }

  async onCommand(action, payload) {
    this.calls.push([action, payload]);
    if (action === 'echo') return payload;
    if (action === 'boom') throw new Error('it broke');
    if (action === 'report') return this.report({ seen: payload.n });
    return super.onCommand(action, payload);
  }

  async onSecrets(secrets) {
    this.calls.push(['secrets', Object.keys(secrets)]);
  }
}

let lastBot;
class Tracked extends Recorder {
  constructor(init) {
    super(init);
    lastBot = this;
  }
}

test('starts, heartbeats, answers commands, reports and leaves with exit 0', async () => {
  const done = start(Tracked);
  await waitFor(() => manager.eventNames().includes('started'), { what: 'started' });
  await waitFor(() => manager.eventNames().filter((e) => e === 'heartbeat').length >= 3, { what: 'heartbeats' });
  assert.deepEqual(lastBot.config, { greeting: 'hi' });
  await subscribed();

  const echo = command('echo', { payload: { x: [1, 2.5, 'é'] } });
  assert.equal(redis.publishSigned(CHANNEL, echo), 1);
  assert.deepEqual(await acked(echo.id), { ok: true, result: { x: [1, 2.5, 'é'] } });

  const unknown = command('dance', { payload: {} });
  redis.publishSigned(CHANNEL, unknown);
  assert.deepEqual(await acked(unknown.id), { ok: false, error: 'unknown_action' });

  const boom = command('boom', { payload: {} });
  redis.publishSigned(CHANNEL, boom);
  assert.deepEqual(await acked(boom.id), { ok: false, error: 'it broke' });

  const report = command('report', { payload: { n: 3 } });
  redis.publishSigned(CHANNEL, report);
  assert.deepEqual(await acked(report.id), { ok: true, result: true });
  assert.deepEqual(manager.events.find((e) => e.event === 'report'), { event: 'report', data: { seen: 3 } });

  const reconfigure = command('reconfigure', { config: { greeting: 'bye' }, config_version: 2 });
  redis.publishSigned(CHANNEL, reconfigure);
  assert.deepEqual(await acked(reconfigure.id), { ok: true });
  assert.deepEqual(lastBot.config, { greeting: 'bye' });

  const refused = command('reconfigure', { config: { refuse: true }, config_version: 3 });
  redis.publishSigned(CHANNEL, refused);
  assert.deepEqual(await acked(refused.id), { ok: false, error: 'refused by the bot' });
  assert.deepEqual(lastBot.config, { greeting: 'bye' });

  const leave = command('leave');
  redis.publishSigned(CHANNEL, leave);
  assert.equal(await done, 0);
  assert.deepEqual(manager.acksOf(leave.id)[0].body, { ok: true });
  const tail = manager.events.filter((e) => e.event !== 'heartbeat' && e.event !== 'report');
  assert.deepEqual(tail, [
    { event: 'started' },
    { event: 'leaving', reason: 'leave_requested' },
    { event: 'exited', exit_code: 0, reason: 'left' },
  ]);
  const exitedAt = manager.events.findIndex((e) => e.event === 'exited');
  assert.equal(exitedAt, manager.events.length - 1, 'nothing follows exited');
});

test('a message without the manager signature is dropped', async () => {
  const done = start(Tracked);
  await subscribed();
  const forged = [
    command('echo', { payload: { n: 1 } }), // unsigned
    command('echo', { payload: { n: 2 } }), // signed with another bot's token
    command('echo', { payload: { n: 3 } }), // signed, then changed
  ];
  redis.publish(CHANNEL, JSON.stringify(forged[0]));
  redis.publishSigned(CHANNEL, forged[1], 'bft_another-bot');
  const tampered = JSON.parse(
    (await import('../src/protocol.js')).signedMessage(forged[2], (await import('../src/protocol.js')).signingKey(TOKEN)),
  );
  tampered.payload.n = 4;
  redis.publish(CHANNEL, JSON.stringify(tampered));
  redis.publish(CHANNEL, 'not json');
  // Messages on one connection are handled in order: once this one is acked, the others were seen.
  const marker = command('echo', { payload: { n: 5 } });
  redis.publishSigned(CHANNEL, marker);
  await acked(marker.id);
  assert.deepEqual(lastBot.calls, [['echo', { n: 5 }]]);
  assert.equal(manager.acks.length, 1);
  send(command('leave'));
  assert.equal(await done, 0);
});

test('each command id is applied once, however often it is delivered', async () => {
  const reconfigure = command('reconfigure', { config: { round: 1 }, config_version: 2 });
  const echo = command('echo', { payload: { n: 1 } });
  manager.pending = [reconfigure, echo];
  const done = start(Tracked);
  await acked(reconfigure.id);
  await acked(echo.id);
  await subscribed();
  redis.publishSigned(CHANNEL, reconfigure); // the manager re-publishes an unacked command
  redis.publishSigned(CHANNEL, echo);
  await waitFor(() => manager.acksOf(echo.id).length === 2, { what: 'the second ack' });
  await waitFor(() => manager.acksOf(reconfigure.id).length === 2, { what: 'the second ack' });
  assert.deepEqual(lastBot.calls, [
    ['reconfigure', { round: 1 }],
    ['echo', { n: 1 }],
  ]);
  assert.deepEqual(manager.acksOf(echo.id)[1].body, { ok: true, result: { n: 1 } }, 'the first outcome again');
  // An older config arriving late is acked but not applied.
  const late = command('reconfigure', { config: { round: 0 }, config_version: 1 });
  redis.publishSigned(CHANNEL, late);
  assert.deepEqual(await acked(late.id), { ok: true });
  assert.deepEqual(lastBot.config, { round: 1 });
  send(command('leave'));
  assert.equal(await done, 0);
});

test('pending commands are read, every page, on each reconnect', async () => {
  manager.pending = [command('echo', { payload: { n: 1 } }), command('echo', { payload: { n: 2 } }), command('echo', { payload: { n: 3 } })];
  const first = manager.pending.map((c) => c.id);
  const done = start(Tracked);
  for (const id of first) await acked(id); // three items over two pages
  await subscribed();
  const reads = manager.pendingReads;

  // Redis goes away; a command is stored meanwhile (its publish was lost).
  await redis.stop();
  const missed = command('echo', { payload: { n: 4 } });
  manager.pending.push(missed);
  await acked(missed.id); // read over HTTP while Redis is down
  await redis.start(redis.port);
  await subscribed();
  assert.ok(manager.pendingReads > reads);
  const afterReconnect = command('echo', { payload: { n: 5 } });
  manager.pending.push(afterReconnect); // stored while the bot reconnects
  redis.dropConnections();
  await acked(afterReconnect.id);
  assert.deepEqual(
    lastBot.calls.map(([, payload]) => payload.n),
    [1, 2, 3, 4, 5],
  );
  send(command('leave'));
  assert.equal(await done, 0);
});

test('a Redis connection that stops answering is replaced', async () => {
  const done = start(Tracked);
  await subscribed();
  const before = redis.connections;
  redis.mute = true; // the connection stays open but says nothing, PONGs included
  // Two health-check periods (0.3 s each here) without an answer: the bot connects again.
  await waitFor(() => redis.connections > before, { what: 'a new connection' });
  redis.mute = false;
  redis.dropConnections();
  await waitFor(() => redis.subscribers(CHANNEL) === 1, { what: 'a resubscription' });
  send(command('leave'));
  assert.equal(await done, 0);
});

test('secrets are fetched over HTTP when the secrets command arrives', async () => {
  manager.secrets = { api_key: 'new' };
  const done = start(Tracked, { BOTFLEET_BOT_SECRETS: JSON.stringify({ api_key: 'old' }) });
  await subscribed();
  assert.deepEqual(lastBot.secrets, { api_key: 'old' });
  const secrets = command('secrets');
  redis.publishSigned(CHANNEL, secrets);
  assert.deepEqual(await acked(secrets.id), { ok: true });
  assert.deepEqual(lastBot.secrets, { api_key: 'new' });
  assert.deepEqual(lastBot.calls, [['secrets', ['api_key']]]);
  send(command('leave'));
  assert.equal(await done, 0);
});

test('BotFailed in onStart ends the bot with its own reason and exit 1', async () => {
  class Unauthorized extends Bot {
    async onStart() {
      throw new BotFailed('platform_unauthorized', 'the token was revoked');
    }
  }
  assert.equal(await start(Unauthorized), 1);
  assert.deepEqual(manager.events, [
    { event: 'exited', exit_code: 1, reason: 'platform_unauthorized', detail: 'the token was revoked' },
  ]);
});

test('a throw in onStart is start_failed; in run, crashed; a return, finished', async () => {
  class BadStart extends Bot {
    async onStart() {
      throw new TypeError('no meeting url');
    }
  }
  assert.equal(await start(BadStart), 1);
  assert.deepEqual(manager.events.at(-1), {
    event: 'exited',
    exit_code: 1,
    reason: 'start_failed',
    detail: 'TypeError: no meeting url',
  });
  class Crashes extends Bot {
    async run() {
      throw new Error('lost the socket');
    }
  }
  assert.equal(await start(Crashes), 1);
  assert.deepEqual(manager.events.at(-1), { event: 'exited', exit_code: 1, reason: 'crashed', detail: 'Error: lost the socket' });
  class Finishes extends Bot {
    async run() {
      await this.report({ done: true });
    }
  }
  assert.equal(await start(Finishes), 0);
  assert.deepEqual(manager.events.at(-1), { event: 'exited', exit_code: 0, reason: 'finished' });
  class Failing extends Bot {
    async run() {
      return 3;
    }
  }
  assert.equal(await start(Failing), 3);
  assert.deepEqual(manager.events.at(-1), { event: 'exited', exit_code: 3, reason: 'bot_error' });
});

test('an onLeave that overruns the leave grace does not hold the exit', async () => {
  let leaveStarted = 0;
  class Slow extends Bot {
    async onLeave() {
      leaveStarted = Date.now();
      await new Promise(() => {}); // never returns
    }
  }
  const done = start(Slow, { BOTFLEET_LEAVE_GRACE_S: '0.3' });
  await subscribed();
  send(command('leave'));
  assert.equal(await done, 0);
  const tookMs = Date.now() - leaveStarted;
  assert.ok(tookMs >= 250, `exited after ${tookMs} ms, before the grace`);
  assert.deepEqual(manager.events.at(-1), { event: 'exited', exit_code: 0, reason: 'left' });
});

test('a bot leaving on its own reports leaving with its detail', async () => {
  class Quits extends Bot {
    async onStart() {
      setTimeout(() => this.requestLeave('the meeting ended'), 10);
    }
  }
  assert.equal(await start(Quits), 0);
  const leaving = manager.events.find((e) => e.event === 'leaving');
  assert.deepEqual(leaving, { event: 'leaving', reason: 'bot_leaving', detail: 'the meeting ended' });
});

test('callbacks retry a manager that answers 503', async () => {
  manager.failNext = 2;
  class Quick extends Bot {
    async run() {}
  }
  assert.equal(await start(Quick), 0);
  assert.deepEqual(manager.eventNames().filter((e) => e !== 'heartbeat'), ['started', 'exited']);
});

test('a missing variable is exit 2, before any callback', async () => {
  const code = await run(Bot, { environ: { ...environ(), BOTFLEET_BOT_TOKEN: '' }, exit: false });
  assert.equal(code, 2);
  assert.deepEqual(manager.events, []);
});

test('a bot that finishes on its own logs no ERROR or WARNING once the manager ends it', async () => {
  endLikeTheManager(manager, redis);
  class Finishes extends Bot {
    async run() {
      await waitFor(() => redis.subscribers(CHANNEL) === 1, { what: 'the bot to subscribe' });
    }
  }
  let output = '';
  const write = process.stderr.write;
  process.stderr.write = (chunk, ...rest) => {
    output += chunk;
    return write.call(process.stderr, chunk, ...rest);
  };
  try {
    assert.equal(await start(Finishes), 0);
  } finally {
    process.stderr.write = write;
  }
  assert.deepEqual(manager.events.at(-1), { event: 'exited', exit_code: 0, reason: 'finished' });
  assert.match(output, /exiting with code 0 \(finished\)/);
  assert.deepEqual(alarms(output), [], output);
});
