// The command protocol, as docs/protocol.md states it: channel names, actions, callback events,
// the command envelope and its signature.
//
// The manager signs a command with HMAC-SHA256 over the *canonical JSON* of its fields as Python
// writes it (`json.dumps(fields, sort_keys=True, separators=(",", ":"))`). JSON.stringify differs
// from that (1.0 is written "1", non-ASCII is not escaped, keys keep their order), so verification
// re-reads the raw message with a parser that keeps what JSON.parse loses (integers of any size,
// the float-ness of 1.0) and writes it the way Python does.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export const CHANNEL_PREFIX = 'bot_commands:';
export const SIGNATURE_FIELD = 'sig';

export const ACTION_RECONFIGURE = 'reconfigure';
export const ACTION_LEAVE = 'leave';
export const ACTION_SECRETS = 'secrets';
export const RESERVED_ACTIONS = Object.freeze([ACTION_RECONFIGURE, ACTION_LEAVE, ACTION_SECRETS]);
export const UNKNOWN_ACTION = 'unknown_action';
export const MAX_RESULT_BYTES = 64 * 1024;
export const MAX_REPORT_BYTES = 16 * 1024;
export const MAX_TEXT = 4000; // the manager's limit on `detail` and an ack's `error`

export const EVENT_STARTED = 'started';
export const EVENT_HEARTBEAT = 'heartbeat';
export const EVENT_LEAVING = 'leaving';
export const EVENT_EXITED = 'exited';
export const EVENT_REPORT = 'report';
export const EVENTS = Object.freeze([
  EVENT_STARTED,
  EVENT_HEARTBEAT,
  EVENT_LEAVING,
  EVENT_EXITED,
  EVENT_REPORT,
]);

/** The fields of a command envelope (besides `sig`). */
export const ENVELOPE_FIELDS = Object.freeze([
  'id',
  'action',
  'config',
  'config_version',
  'payload',
  'issued_at',
]);

export class ProtocolError extends Error {}

export function commandChannel(botId) {
  return CHANNEL_PREFIX + botId;
}

/** The HMAC key of a bot's commands: the lowercase hex SHA-256 of its token (the manager stores
 * exactly this digest), used as ASCII bytes. */
export function signingKey(token) {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** Hex HMAC-SHA256 of the canonical JSON text `canonical` under `key`. */
export function hmacHex(canonical, key) {
  return createHmac('sha256', Buffer.from(key, 'utf8')).update(canonical, 'utf8').digest('hex');
}

/** Sign plain fields (a JS object; its numbers are written as Python would write them after
 * reading JSON.stringify's output). For tests and fakes: the manager is the one that signs. */
export function signFields(fields, key) {
  const unsigned = { ...fields };
  delete unsigned[SIGNATURE_FIELD];
  return hmacHex(canonicalJson(parseJsonTree(JSON.stringify(unsigned))), key);
}

/** The raw JSON text of a signed message for `fields`. */
export function signedMessage(fields, key) {
  return JSON.stringify({ ...fields, [SIGNATURE_FIELD]: signFields(fields, key) });
}

/**
 * Verify a raw Redis message. Returns the parsed command (see parseCommand) when it carries the
 * manager's signature of exactly its other fields under `key`, else null (not JSON, no `sig`, a
 * wrong one, or not a valid envelope). Constant-time comparison.
 */
export function verifyMessage(raw, key) {
  const text = typeof raw === 'string' ? raw : Buffer.from(raw).toString('utf8');
  let tree;
  try {
    tree = parseJsonTree(text);
  } catch {
    return null;
  }
  if (tree.t !== 'object') return null;
  const sig = tree.v.get(SIGNATURE_FIELD);
  if (!sig || sig.t !== 'string') return null;
  const unsigned = new Map(tree.v);
  unsigned.delete(SIGNATURE_FIELD);
  const expected = hmacHex(canonicalJson({ t: 'object', v: unsigned }), key);
  const given = Buffer.from(sig.v, 'utf8');
  const wanted = Buffer.from(expected, 'utf8');
  if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) return null;
  try {
    return parseCommand(JSON.parse(text));
  } catch {
    return null;
  }
}

/** A command envelope from decoded JSON (a Redis message or an item of a pending page); throws
 * ProtocolError for a malformed one. Unknown actions parse fine: the router decides. */
export function parseCommand(data) {
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new ProtocolError('a command must be a JSON object');
  }
  const { id, action, config, config_version: version, payload } = data;
  if (typeof id !== 'string' || !id) throw new ProtocolError("a command needs a string 'id'");
  if (typeof action !== 'string' || !action) {
    throw new ProtocolError("a command needs a string 'action'");
  }
  if (config != null && !isPlainObject(config)) throw new ProtocolError("'config' must be an object");
  if (version != null && !Number.isInteger(version)) {
    throw new ProtocolError("'config_version' must be an integer");
  }
  if (payload != null && !isPlainObject(payload)) {
    throw new ProtocolError("'payload' must be an object");
  }
  return {
    id,
    action,
    issued_at: String(data.issued_at ?? ''),
    config: config ?? null,
    config_version: version ?? null,
    payload: payload ?? null,
  };
}

export function isPlainObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** `Type: message`, how errors are written in `detail` and an ack's `error`. */
export function describeError(err) {
  if (err instanceof Error) {
    const name = err.name && err.name !== 'Error' ? err.name : err.constructor?.name || 'Error';
    return err.message ? `${name}: ${err.message}` : name;
  }
  return String(err);
}

/** The size in bytes of `value` as the manager measures it (compact JSON, ASCII-escaped);
 * throws TypeError for a value JSON cannot hold. */
export function jsonSize(value) {
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError('not a JSON value');
  return Buffer.byteLength(canonicalJson(parseJsonTree(text), { sortKeys: false }), 'utf8');
}

// ---- canonical JSON, as Python's json.dumps(sort_keys=True, separators=(",", ":")) ----

/**
 * Parse JSON text into a tree that keeps number literals: {t: 'object', v: Map}, {t: 'array',
 * v: [...]}, {t: 'string', v}, {t: 'number', v: <literal text>}, {t: 'literal', v: 'true' |
 * 'false' | 'null'}. Accepts what Python's json.loads accepts (NaN, Infinity, -Infinity too);
 * a repeated key keeps its last value, as in Python.
 */
export function parseJsonTree(text) {
  let i = 0;
  const fail = (what) => {
    throw new SyntaxError(`${what} at position ${i}`);
  };
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  const value = (depth) => {
    if (depth > 1000) fail('nested too deeply');
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const map = new Map();
      ws();
      if (text[i] === '}') {
        i++;
        return { t: 'object', v: map };
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail('expected a key');
        const key = string();
        ws();
        if (text[i] !== ':') fail("expected ':'");
        i++;
        map.delete(key); // Python keeps the last value of a repeated key
        map.set(key, value(depth + 1));
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          return { t: 'object', v: map };
        }
        fail("expected ',' or '}'");
      }
    }
    if (c === '[') {
      i++;
      const items = [];
      ws();
      if (text[i] === ']') {
        i++;
        return { t: 'array', v: items };
      }
      for (;;) {
        items.push(value(depth + 1));
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === ']') {
          i++;
          return { t: 'array', v: items };
        }
        fail("expected ',' or ']'");
      }
    }
    if (c === '"') return { t: 'string', v: string() };
    for (const word of ['true', 'false', 'null']) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return { t: 'literal', v: word };
      }
    }
    for (const word of ['NaN', 'Infinity', '-Infinity']) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return { t: 'number', v: word };
      }
    }
    const m = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?/.exec(text.slice(i, i + 400));
    if (!m) fail('unexpected character');
    i += m[0].length;
    return { t: 'number', v: m[0] };
  };
  const string = () => {
    i++; // the opening quote
    let out = '';
    for (;;) {
      if (i >= text.length) fail('unterminated string');
      const c = text[i];
      if (c === '"') {
        i++;
        return out;
      }
      if (c === '\\') {
        const e = text[i + 1];
        const simple = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
        if (e in simple) {
          out += simple[e];
          i += 2;
        } else if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
          out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16));
          i += 6;
        } else {
          fail('invalid escape');
        }
      } else {
        if (c.charCodeAt(0) < 0x20) fail('control character in a string');
        out += c;
        i++;
      }
    }
  };
  const result = value(0);
  ws();
  if (i !== text.length) fail('extra data');
  return result;
}

/** The canonical text of a tree from parseJsonTree (keys sorted by code point unless
 * `sortKeys` is false). */
export function canonicalJson(node, { sortKeys = true } = {}) {
  switch (node.t) {
    case 'object': {
      const keys = [...node.v.keys()];
      if (sortKeys) keys.sort(compareCodePoints);
      const parts = keys.map((k) => `${pyString(k)}:${canonicalJson(node.v.get(k), { sortKeys })}`);
      return `{${parts.join(',')}}`;
    }
    case 'array':
      return `[${node.v.map((n) => canonicalJson(n, { sortKeys })).join(',')}]`;
    case 'string':
      return pyString(node.v);
    case 'number':
      return pyNumber(node.v);
    default:
      return node.v;
  }
}

/** Python's str ordering: by code point (JS's default sort compares UTF-16 units). */
export function compareCodePoints(a, b) {
  const x = [...a];
  const y = [...b];
  for (let k = 0; k < Math.min(x.length, y.length); k++) {
    const d = x[k].codePointAt(0) - y[k].codePointAt(0);
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

const SHORT_ESCAPES = { '"': '\\"', '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\b': '\\b', '\f': '\\f' };

/** A string as Python's json.dumps writes it (ensure_ascii): everything outside ' '..'~'
 * escaped, as \uXXXX (lowercase) per UTF-16 unit. */
export function pyString(s) {
  let out = '"';
  for (let k = 0; k < s.length; k++) {
    const ch = s[k];
    const code = s.charCodeAt(k);
    if (ch in SHORT_ESCAPES) out += SHORT_ESCAPES[ch];
    else if (code >= 0x20 && code <= 0x7e) out += ch;
    else out += `\\u${code.toString(16).padStart(4, '0')}`;
  }
  return `${out}"`;
}

/** A number literal as Python writes it after reading it: an integer exactly (any size), a
 * float as repr() does (shortest round-trip digits; exponent form below 1e-4 or from 1e16). */
export function pyNumber(literal) {
  if (literal === 'NaN' || literal === 'Infinity' || literal === '-Infinity') return literal;
  if (/^-?\d+$/.test(literal)) return BigInt(literal).toString();
  return pyFloat(Number(literal));
}

export function pyFloat(x) {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  const [mantissa, expText] = Math.abs(x).toExponential().split('e');
  const digits = mantissa.replace('.', '');
  const exp = Number(expText);
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = Math.abs(exp).toString().padStart(2, '0');
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${e}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  const intPart = digits.slice(0, exp + 1).padEnd(exp + 1, '0');
  const frac = digits.slice(exp + 1) || '0';
  return `${sign}${intPart}.${frac}`;
}
