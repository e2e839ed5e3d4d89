// Signatures as the manager makes them (vectors.json is written by the Python implementation and
// checked against it by tests/unit/test_protocol_doc.py), the doc's example, RESP and Redis URLs.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import {
  canonicalJson,
  parseCommand,
  parseJsonTree,
  pyFloat,
  signingKey,
  verifyMessage,
} from '../src/protocol.js';
import { encodeCommand, parseRedisUrl, parseReply } from '../src/resp.js';
import { RuntimeConfigError, parseEnv, withSecretEnv } from '../src/env.js';

const vectors = JSON.parse(readFileSync(new URL('./vectors.json', import.meta.url), 'utf8'));
const doc = readFileSync(new URL('../../../docs/protocol.md', import.meta.url), 'utf8');

function docExample(name) {
  const match = new RegExp(`<!-- example:${name} -->\\n\`\`\`\\w*\\n(.*?)\\n\`\`\``, 's').exec(doc);
  assert.ok(match, `docs/protocol.md has no example ${name}`);
  return match[1];
}

test("the manager's signatures verify, floats, big integers and non-ASCII included", () => {
  assert.equal(signingKey(vectors.token), vectors.key);
  for (const raw of vectors.messages) {
    const command = verifyMessage(raw, vectors.key);
    assert.ok(command, raw);
    assert.equal(verifyMessage(Buffer.from(raw), vectors.key)?.id, command.id, 'bytes as from Redis');
  }
});

test('any change, another key, or no signature is refused', () => {
  const raw = vectors.messages[1];
  assert.equal(verifyMessage(raw, signingKey('bft_other')), null);
  assert.equal(verifyMessage(raw.replace('"config_version":7', '"config_version":8'), vectors.key), null);
  assert.equal(verifyMessage(raw.replace('1.0,', '1,'), vectors.key), null, '1.0 is not 1 to the signer');
  const fields = JSON.parse(raw);
  delete fields.sig;
  assert.equal(verifyMessage(JSON.stringify(fields), vectors.key), null);
  assert.equal(verifyMessage('not json', vectors.key), null);
  assert.equal(verifyMessage('[1, 2]', vectors.key), null);
  assert.equal(verifyMessage(JSON.stringify({ ...fields, sig: 12 }), vectors.key), null);
});

test("the doc's signing example verifies", () => {
  const key = docExample('key');
  assert.equal(signingKey(docExample('token')), key);
  const message = docExample('message');
  assert.deepEqual(verifyMessage(message, key), {
    id: '0190c2a4-7b7e-7000-8000-00000000c0de',
    action: 'reconfigure',
    issued_at: '2025-01-02T03:04:05.678901+00:00',
    config: { greeting: 'héllo', volume: 0.5, rooms: [1, 2] },
    config_version: 3,
    payload: null,
  });
  const tree = parseJsonTree(message);
  tree.v.delete('sig');
  assert.equal(canonicalJson(tree), docExample('canonical'));
});

test('floats are written as Python writes them', () => {
  const cases = [
    [1, '1.0'], [0.1, '0.1'], [1e-5, '1e-05'], [0.0001, '0.0001'], [1e16, '1e+16'],
    [1e15, '1000000000000000.0'], [-0, '-0.0'], [1.5e300, '1.5e+300'], [5e-324, '5e-324'],
    [123.456, '123.456'], [-2.5e-7, '-2.5e-07'], [12345678901234567, '1.2345678901234568e+16'],
  ];
  for (const [value, text] of cases) assert.equal(pyFloat(value), text, String(value));
  assert.equal(canonicalJson(parseJsonTree('{"b":[1,1.50,-0],"a":"\\u00e9\\ud83d\\ude00/","😀":1,"\uffff":2}')),
    '{"a":"\\u00e9\\ud83d\\ude00/","b":[1,1.5,0],"\\uffff":2,"\\ud83d\\ude00":1}');
  assert.equal(canonicalJson(parseJsonTree('{"n": 123456789012345678901234567890}')), '{"n":123456789012345678901234567890}');
});

test('an envelope is checked field by field', () => {
  assert.throws(() => parseCommand({ action: 'leave' }), /id/);
  assert.throws(() => parseCommand({ id: 'c', action: 'x', config: [1] }), /config/);
  assert.throws(() => parseCommand({ id: 'c', action: 'x', config_version: 1.5 }), /config_version/);
  assert.throws(() => parseCommand({ id: 'c', action: 'x', payload: 'p' }), /payload/);
  assert.equal(parseCommand({ id: 'c', action: 'leave', extra: 1 }).action, 'leave');
});

test('RESP replies are read whole or not at all', () => {
  const message = Buffer.from('*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n');
  assert.deepEqual(parseReply(message).map((v) => (Array.isArray(v) ? v.map(String) : v)), [
    ['message', 'ch', 'hello'],
    message.length,
  ]);
  for (let cut = 0; cut < message.length; cut++) assert.equal(parseReply(message.subarray(0, cut)), null);
  assert.deepEqual(parseReply(Buffer.from('-NOPERM no\r\n')), [{ error: 'NOPERM no' }, 12]);
  assert.deepEqual(parseReply(Buffer.from(':3\r\n')), [3, 4]);
  assert.equal(encodeCommand('AUTH', 'u', 'pé').toString(), '*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$3\r\npé\r\n');
});

test('Redis URLs as the manager hands them out', () => {
  assert.deepEqual(parseRedisUrl('redis://botfleet-bot-b1:bft_x-y@127.0.0.1:6390/2'), {
    tls: false, host: '127.0.0.1', port: 6390, path: '', username: 'botfleet-bot-b1', password: 'bft_x-y', db: 2,
  });
  assert.equal(parseRedisUrl('rediss://[::1]:7000').host, '::1');
  assert.equal(parseRedisUrl('rediss://[::1]:7000').tls, true);
  assert.deepEqual(parseRedisUrl('redis://:p%40ss@h').password, 'p@ss');
  assert.equal(parseRedisUrl('redis://h').username, null);
  assert.equal(parseRedisUrl('unix:///run/redis.sock?db=3').path, '/run/redis.sock');
  assert.equal(parseRedisUrl('unix:///run/redis.sock?db=3').db, 3);
  assert.throws(() => parseRedisUrl('http://h'), /redis:\/\//);
});

test('the environment: secrets from the pipe, required names, bad values', () => {
  const base = {
    BOTFLEET_BOT_ID: 'b1',
    BOTFLEET_CALLBACK_URL: 'http://127.0.0.1:1/',
    BOTFLEET_SECRET_ENV_FD: '7',
  };
  const merged = withSecretEnv(base, {
    readFd: (fd) => (fd === 7 ? '{"BOTFLEET_BOT_TOKEN": "t", "BOTFLEET_REDIS_URL": "redis://h"}' : ''),
  });
  assert.equal(merged.BOTFLEET_SECRET_ENV_FD, undefined);
  const env = parseEnv(merged);
  assert.equal(env.token, 't');
  assert.equal(env.callbackUrl, 'http://127.0.0.1:1');
  assert.equal(env.commandChannel, 'bot_commands:b1');
  assert.equal(env.heartbeatS, 10);
  assert.throws(() => withSecretEnv(base, { readFd: () => '[1]' }), RuntimeConfigError);
  assert.throws(() => parseEnv({ ...merged, BOTFLEET_HEARTBEAT_S: '0' }), /positive/);
  assert.throws(() => parseEnv({ ...merged, BOTFLEET_BOT_CONFIG: '[]' }), /JSON object/);
  assert.throws(() => parseEnv({ ...merged, BOTFLEET_STATE_DIR: 'rel' }), /absolute/);
  assert.throws(() => parseEnv({ ...merged, BOTFLEET_BOT_SECRETS: '{"a": 1}' }), /strings/);
});
