// The example bot as its own process, as a backend launches it: the token through the secret
// pipe (BOTFLEET_SECRET_ENV_FD), SIGTERM as a graceful leave, exit codes.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, test } from 'node:test';
import { BOT_ID, FakeManager, FakeRedis, TOKEN, alarms, endLikeTheManager, waitFor } from './fakes.js';

const ECHO = fileURLToPath(new URL('../examples/echo.mjs', import.meta.url));
const CHANNEL = `bot_commands:${BOT_ID}`;

let manager;
let redis;
/** Every child a test started: killed after it, so a failed assertion never leaves one running
 *  (a live child keeps `node --test` waiting for ever). */
const children = new Set();

beforeEach(async () => {
  manager = await new FakeManager().start();
  redis = await new FakeRedis().start();
});

afterEach(async () => {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  children.clear();
  await manager.stop();
  await redis.stop();
});

/** Start the example with the public variables in its environment and the secret ones on fd 3. */
function launch({ env = {}, secretEnv = { BOTFLEET_BOT_TOKEN: TOKEN, BOTFLEET_REDIS_URL: redis.url } } = {}) {
  const child = spawn(process.execPath, [ECHO], {
    env: {
      PATH: process.env.PATH,
      BOTFLEET_BOT_ID: BOT_ID,
      BOTFLEET_CALLBACK_URL: manager.url,
      BOTFLEET_COMMAND_CHANNEL: CHANNEL,
      BOTFLEET_BOT: 'node-echo',
      BOTFLEET_BOT_CONFIG: JSON.stringify({ greeting: 'hej' }),
      BOTFLEET_HEARTBEAT_S: '0.1',
      BOTFLEET_SECRET_ENV_FD: '3',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  child.stdio[3].end(JSON.stringify(secretEnv));
  child.output = () => output;
  child.exited = once(child, 'exit').then(([code]) => code);
  children.add(child);
  return child;
}

test('SIGTERM is a graceful leave: leaving (sigterm), exited 0', async () => {
  const child = launch();
  await waitFor(() => redis.subscribers(CHANNEL) === 1, { what: 'the bot to subscribe' });
  // The first report may reach the manager just after the subscription.
  await waitFor(() => manager.events.find((e) => e.event === 'report'), { what: 'the first report' });
  assert.deepEqual(manager.events.find((e) => e.event === 'report'), {
    event: 'report',
    data: { phase: 'started', greeting: 'hej' },
  });
  child.kill('SIGTERM');
  assert.equal(await child.exited, 0, child.output());
  const lifecycle = manager.events.filter((e) => !['heartbeat', 'report'].includes(e.event));
  assert.deepEqual(lifecycle, [
    { event: 'started' },
    { event: 'leaving', reason: 'sigterm' },
    { event: 'exited', exit_code: 0, reason: 'left' },
  ]);
  assert.ok(!child.output().includes(TOKEN), 'the token is never logged');
});

test('the example answers echo and leaves on the leave command', async () => {
  const child = launch();
  await waitFor(() => redis.subscribers(CHANNEL) === 1, { what: 'the bot to subscribe' });
  redis.publishSigned(CHANNEL, { id: 'c1', action: 'echo', payload: { text: 'ping' }, issued_at: 't' });
  await waitFor(() => manager.acksOf('c1')[0], { what: 'the echo ack' });
  assert.deepEqual(manager.acksOf('c1')[0].body, { ok: true, result: { text: 'ping' } });
  redis.publishSigned(CHANNEL, { id: 'c2', action: 'leave', issued_at: 't' });
  assert.equal(await child.exited, 0, child.output());
});

test('BotFailed on start: exit 1 with the reason; a bad environment: exit 2', async () => {
  const failing = launch({ env: { BOTFLEET_BOT_CONFIG: '{"fail_on_start": true}' } });
  assert.equal(await failing.exited, 1, failing.output());
  assert.deepEqual(manager.events, [
    { event: 'exited', exit_code: 1, reason: 'echo_refused', detail: 'told to fail on start' },
  ]);
  const broken = launch({ secretEnv: { BOTFLEET_REDIS_URL: redis.url } }); // no token
  assert.equal(await broken.exited, 2);
  assert.match(broken.output(), /BOTFLEET_BOT_TOKEN is required/);
});

test('a clean leave logs no ERROR or WARNING once the manager ends the bot', async () => {
  endLikeTheManager(manager, redis);
  const child = launch();
  await waitFor(() => redis.subscribers(CHANNEL) === 1, { what: 'the bot to subscribe' });
  child.kill('SIGTERM');
  assert.equal(await child.exited, 0, child.output());
  assert.deepEqual(manager.events.at(-1), { event: 'exited', exit_code: 0, reason: 'left' });
  assert.deepEqual(alarms(child.output()), [], child.output());
});
