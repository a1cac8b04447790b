// The official `openai` npm SDK pointed at Jimini through baseURL, nothing else changed
// (DESIGN §1: "official SDKs (Python, Node) work unchanged, streaming and non-streaming").
//
// Mirrors tests/python/test_openai_sdk.py. The suite starts the real binary itself: `JIMINI_BIN`
// (default target/debug/jimini) serves on free loopback ports in front of `jimini mock-upstream`.
// Inputs are generated; the seed is printed and can be replayed with JIMINI_TEST_SEED=<n>.
//
// Run: JIMINI_BIN=$PWD/target/debug/jimini node --test tests/node/
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import OpenAI, { PermissionDeniedError } from 'openai';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = process.env.JIMINI_BIN || path.join(ROOT, 'target', 'debug', 'jimini');
const TEST_TIMEOUT_MS = 30_000;

// ---------------------------------------------------------------------------------------------
// Generated inputs (seeded, reproducible)

const SEED = Number(process.env.JIMINI_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));
console.log(`# node sdk suite: JIMINI_TEST_SEED=${SEED}`);

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = mulberry32(SEED);
const randInt = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1)); // inclusive
const randChars = (alphabet, n) => Array.from({ length: n }, () => alphabet[randInt(0, alphabet.length - 1)]).join('');
const LOWER = 'abcdefghijklmnopqrstuvwxyz';
const ALNUM = LOWER + LOWER.toUpperCase() + '0123456789';

function randEmail() {
  return `${randChars(LOWER, randInt(3, 10))}.${randInt(1, 99)}@${randChars(LOWER, randInt(3, 8))}.example.com`;
}

function luhnCard() {
  const digits = [4, ...Array.from({ length: 14 }, () => randInt(0, 9))];
  let total = 0;
  [...digits].reverse().forEach((d, i) => {
    if (i % 2 === 0) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    total += d;
  });
  return digits.join('') + String((10 - (total % 10)) % 10);
}

const randOpenAIKey = () => 'sk-proj-' + randChars(ALNUM, 48);

// ---------------------------------------------------------------------------------------------
// The stack: mock upstream + jimini serve, on free loopback ports

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function tryConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const done = (ok) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(500, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

async function waitPort(port, proc, what, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`${what} exited early (code ${proc.exitCode}, signal ${proc.signalCode})`);
    }
    if (await tryConnect(port)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: port ${port} never opened`);
}

async function stopProcess(proc) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

// Children (and temp dirs) are cleaned up even if the test process is interrupted or dies without
// running its `after` hooks: on exit, and on the signals a runner, CI or Ctrl-C sends.
const children = new Set();
const tempDirs = new Set();
function killAll() {
  for (const p of children) {
    try {
      p.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
}
process.on('exit', killAll);
// A reader that goes away (`node --test … | head`) must not kill this process mid-run: without a
// listener, EPIPE on stdout ends it without 'exit' and leaves both servers running.
process.stdout.on('error', () => {});
process.stderr.on('error', () => {});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    killAll();
    process.exit(128 + os.constants.signals[sig]);
  });
}

class Stack {
  constructor({ rules = null, chunkChars = 4 } = {}) {
    this.rules = rules;
    this.chunkChars = chunkChars;
  }

  async start() {
    if (!existsSync(BIN)) throw new Error(`jimini binary not found at ${BIN} (cargo build --bins, or set JIMINI_BIN)`);
    this.tmp = mkdtempSync(path.join(os.tmpdir(), 'jimini-node-'));
    tempDirs.add(this.tmp);
    this.mockPort = await freePort();
    this.proxyPort = await freePort();
    this.adminPort = await freePort();

    this.mock = spawn(BIN, ['mock-upstream', '--listen', `127.0.0.1:${this.mockPort}`, '--chunk-chars', String(this.chunkChars)], {
      stdio: 'ignore',
    });
    children.add(this.mock);
    await waitPort(this.mockPort, this.mock, 'mock-upstream');

    const rulesDir = path.join(this.tmp, 'rules');
    mkdirSync(rulesDir);
    if (this.rules === null) {
      for (const f of readdirSync(path.join(ROOT, 'rules')).filter((f) => f.endsWith('.yaml'))) {
        copyFileSync(path.join(ROOT, 'rules', f), path.join(rulesDir, f));
      }
    } else {
      for (const [name, text] of Object.entries(this.rules)) writeFileSync(path.join(rulesDir, name), text);
    }
    const cfg = path.join(this.tmp, 'jimini.yaml');
    writeFileSync(
      cfg,
      [
        `listen: 127.0.0.1:${this.proxyPort}`,
        'server:',
        '  threads: 2',
        '  grace_period_secs: 0',
        '  shutdown_timeout_secs: 1',
        'admin:',
        `  listen: 127.0.0.1:${this.adminPort}`,
        'upstreams:',
        '  - name: mock',
        `    base_url: http://127.0.0.1:${this.mockPort}`,
        'rules:',
        `  dir: ${rulesDir}`,
        'audit:',
        `  dir: ${path.join(this.tmp, 'audit')}`,
        '',
      ].join('\n'),
    );
    this.logPath = path.join(this.tmp, 'jimini.log');
    const log = openSync(this.logPath, 'w');
    this.proxy = spawn(BIN, ['serve', '-c', cfg], { stdio: ['ignore', log, log] });
    closeSync(log);
    children.add(this.proxy);
    try {
      await waitPort(this.proxyPort, this.proxy, 'jimini serve');
      await waitPort(this.adminPort, this.proxy, 'jimini admin');
    } catch (e) {
      e.message += `\n--- jimini log ---\n${this.log()}`;
      throw e;
    }
    this.baseURL = `http://127.0.0.1:${this.proxyPort}/v1`;
    this.mockURL = `http://127.0.0.1:${this.mockPort}`;
    return this;
  }

  log() {
    try {
      return readFileSync(this.logPath, 'utf8');
    } catch {
      return '(no log)';
    }
  }

  client() {
    return new OpenAI({ baseURL: this.baseURL, apiKey: 'sk-test-caller-key', maxRetries: 0, timeout: 20_000 });
  }

  async upstreamRequests() {
    const r = await fetch(`${this.mockURL}/mock/requests`);
    assert.equal(r.status, 200);
    return (await r.json()).data;
  }

  async lastUpstreamBody() {
    const reqs = await this.upstreamRequests();
    assert.ok(reqs.length > 0, 'upstream saw no request');
    return JSON.parse(reqs[reqs.length - 1].body);
  }

  async clearUpstream() {
    const r = await fetch(`${this.mockURL}/mock/requests`, { method: 'DELETE' });
    await r.arrayBuffer();
  }

  async close() {
    await Promise.all([stopProcess(this.proxy), stopProcess(this.mock)]);
    children.delete(this.proxy);
    children.delete(this.mock);
    if (this.tmp) rmSync(this.tmp, { recursive: true, force: true });
    tempDirs.delete(this.tmp);
  }
}

// ---------------------------------------------------------------------------------------------
// Shipped rules (rules/*.yaml): mask PII both ways, block secrets

describe('shipped rules', { timeout: 120_000 }, () => {
  const stack = new Stack();
  before(() => stack.start());
  after(() => stack.close());

  test('chat non-streaming: PII is redacted both ways, the upstream never sees it', { timeout: TEST_TIMEOUT_MS }, async () => {
    const email = randEmail();
    const card = luhnCard();
    await stack.clearUpstream();
    const resp = await stack.client().chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: `mail ${email} card ${card} thanks` }],
    });
    const text = resp.choices[0].message.content;
    assert.ok(!text.includes(email) && !text.includes(card), text);
    assert.ok(text.includes('[REDACTED:EMAIL]') && text.includes('[REDACTED:CREDIT_CARD]'), text);
    const sent = await stack.lastUpstreamBody();
    assert.equal(sent.model, 'gpt-4o-mini');
    assert.ok(!JSON.stringify(sent).includes(email));
    assert.ok(!JSON.stringify(sent).includes(card));
    assert.ok(sent.messages[0].content.includes('[REDACTED:EMAIL]'), sent.messages[0].content);
  });

  test('chat streaming with include_usage: no delta leaks, usage arrives', { timeout: TEST_TIMEOUT_MS }, async () => {
    for (let i = 0; i < 5; i++) {
      const email = randEmail();
      const stream = await stack.client().chat.completions.create({
        model: 'gpt-4o',
        messages: [{ role: 'user', content: `Contact ${email} now, please.` }],
        stream: true,
        stream_options: { include_usage: true },
      });
      const parts = [];
      let usage = null;
      let chunks = 0;
      for await (const chunk of stream) {
        chunks++;
        if (chunk.usage) usage = chunk.usage;
        for (const c of chunk.choices) {
          if (c.delta?.content) parts.push(c.delta.content);
        }
      }
      const text = parts.join('');
      assert.ok(chunks > 2, `expected a real stream, got ${chunks} chunk(s)`);
      assert.ok(!text.includes(email), text);
      assert.ok(text.includes('[REDACTED:EMAIL]'), text);
      assert.ok(text.startsWith('Contact ') && text.endsWith(' now, please.'), text);
      assert.ok(usage && usage.total_tokens > 0, `usage: ${JSON.stringify(usage)}`);
    }
  });

  test('chat streaming through the SDK stream helper (runner API)', { timeout: TEST_TIMEOUT_MS }, async () => {
    const email = randEmail();
    const runner = stack.client().chat.completions.stream({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: `Send it to ${email} please` }],
    });
    const parts = [];
    runner.on('content', (delta) => parts.push(delta));
    const final = await runner.finalChatCompletion();
    const text = final.choices[0].message.content;
    assert.equal(parts.join(''), text);
    assert.ok(!text.includes(email) && text.includes('[REDACTED:EMAIL]'), text);
  });

  test('Responses API streaming: deltas and the final output_text are redacted', { timeout: TEST_TIMEOUT_MS }, async () => {
    const email = randEmail();
    const stream = await stack.client().responses.create({ model: 'gpt-4o', input: `reach me at ${email}`, stream: true });
    const deltas = [];
    const types = new Set();
    let final = null;
    for await (const event of stream) {
      types.add(event.type);
      if (event.type === 'response.output_text.delta') deltas.push(event.delta);
      if (event.type === 'response.completed') final = event.response;
    }
    const text = deltas.join('');
    assert.ok(types.has('response.created'), [...types].join(','));
    assert.ok(!text.includes(email) && text.includes('[REDACTED:EMAIL]'), text);
    assert.ok(final, `no response.completed among ${[...types].join(',')}`);
    // `output_text` is an SDK convenience: the v6 SDK adds it on the final response object.
    const finalText = final.output_text ?? final.output.flatMap((o) => o.content ?? []).map((c) => c.text ?? '').join('');
    assert.ok(!finalText.includes(email) && finalText.includes('[REDACTED:EMAIL]'), finalText);
  });

  test('Responses API stream helper: finalResponse().output_text', { timeout: TEST_TIMEOUT_MS }, async () => {
    const email = randEmail();
    const stream = stack.client().responses.stream({ model: 'gpt-4o', input: `write ${email} down` });
    const deltas = [];
    stream.on('response.output_text.delta', (e) => deltas.push(e.delta));
    const final = await stream.finalResponse();
    assert.ok(!final.output_text.includes(email) && final.output_text.includes('[REDACTED:EMAIL]'), final.output_text);
    assert.equal(deltas.join(''), final.output_text);
  });

  test('Responses API non-streaming', { timeout: TEST_TIMEOUT_MS }, async () => {
    const email = randEmail();
    const resp = await stack.client().responses.create({ model: 'gpt-4o', input: `x ${email} y` });
    assert.ok(!resp.output_text.includes(email) && resp.output_text.includes('[REDACTED:EMAIL]'), resp.output_text);
  });

  test('embeddings (SDK default base64 encoding): vectors decode, input is redacted', { timeout: TEST_TIMEOUT_MS }, async () => {
    const email = randEmail();
    await stack.clearUpstream();
    const resp = await stack.client().embeddings.create({ model: 'text-embedding-3-small', input: [`hi ${email}`, 'plain'] });
    assert.equal(resp.data.length, 2);
    for (const d of resp.data) {
      assert.ok(d.embedding.length > 0);
      assert.ok(d.embedding.every((x) => Number.isFinite(x)));
    }
    const sent = await stack.lastUpstreamBody();
    assert.equal(sent.encoding_format, 'base64', 'the Node SDK asks for base64 by default');
    assert.ok(!JSON.stringify(sent).includes(email));
  });

  test('embeddings with encoding_format float', { timeout: TEST_TIMEOUT_MS }, async () => {
    const email = randEmail();
    await stack.clearUpstream();
    const resp = await stack.client().embeddings.create({ model: 'text-embedding-3-small', input: `hello ${email}`, encoding_format: 'float' });
    assert.equal(resp.data.length, 1);
    assert.ok(Array.isArray(resp.data[0].embedding) && resp.data[0].embedding.length > 0);
    assert.ok(!JSON.stringify(await stack.lastUpstreamBody()).includes(email));
  });

  test('models.list passes through (auto-pagination)', { timeout: TEST_TIMEOUT_MS }, async () => {
    const page = await stack.client().models.list();
    assert.ok(page.data.length >= 1);
    const ids = [];
    for await (const m of stack.client().models.list()) ids.push(m.id);
    assert.ok(ids.length >= 1 && ids.every((id) => typeof id === 'string'));
  });

  test('a secret in the prompt is blocked with PermissionDeniedError; the upstream never sees it', { timeout: TEST_TIMEOUT_MS }, async () => {
    const key = randOpenAIKey();
    await stack.clearUpstream();
    await assert.rejects(
      stack.client().chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: `my key is ${key}` }] }),
      (err) => {
        assert.ok(err instanceof PermissionDeniedError, `got ${err?.constructor?.name}: ${err?.message}`);
        assert.equal(err.status, 403);
        assert.equal(err.type, 'jimini_policy_violation');
        assert.equal(err.error.type, 'jimini_policy_violation');
        assert.ok(typeof err.code === 'string' && err.code.startsWith('secrets.'), `code ${err.code}`);
        assert.ok(!err.message.includes(key), 'the error message must not echo the secret');
        return true;
      },
    );
    for (const r of await stack.upstreamRequests()) assert.ok(!r.body.includes(key));
  });

  test('a secret in a streaming request is blocked before the stream starts', { timeout: TEST_TIMEOUT_MS }, async () => {
    const key = randOpenAIKey();
    await stack.clearUpstream();
    await assert.rejects(
      (async () => {
        const stream = await stack.client().chat.completions.create({
          model: 'gpt-4o',
          messages: [{ role: 'user', content: `use ${key} for this` }],
          stream: true,
        });
        for await (const _ of stream); // drain: the 403 surfaces on create()
      })(),
      (err) => err instanceof PermissionDeniedError && err.status === 403 && err.code.startsWith('secrets.'),
    );
    for (const r of await stack.upstreamRequests()) assert.ok(!r.body.includes(key));
  });

  test('malformed JSON is a clean OpenAI-shaped 400', { timeout: TEST_TIMEOUT_MS }, async () => {
    const r = await fetch(`${stack.baseURL}/chat/completions`, {
      method: 'POST',
      body: '{not json',
      headers: { 'content-type': 'application/json', authorization: 'Bearer x' },
    });
    assert.equal(r.status, 400);
    assert.equal((await r.json()).error.type, 'invalid_request_error');
  });
});

// ---------------------------------------------------------------------------------------------
// Custom rules: pseudonymize on the way in, restore on the way out; one-character stream chunks

const PSEUDO_RULES = {
  'pii.yaml': `
pack: pii
version: 1
mode: enforce
rules:
  - id: email
    description: Email addresses are pseudonymized and restored in the answer
    detector: email
    direction: [request]
    action: redact
    redact: pseudonymize
  - id: phone
    description: Phone numbers are pseudonymized
    detector: phone
    direction: [request]
    action: redact
    redact: pseudonymize
`,
};

describe('pseudonymize round trip (custom rules, 1-char chunks)', { timeout: 120_000 }, () => {
  const stack = new Stack({ rules: PSEUDO_RULES, chunkChars: 1 });
  before(() => stack.start());
  after(() => stack.close());

  test('streaming: the answer equals the original text, the upstream saw only [EMAIL_1]', { timeout: TEST_TIMEOUT_MS }, async () => {
    for (let i = 0; i < 3; i++) {
      const email = randEmail();
      const original = `Write to ${email} and ${email} today`;
      await stack.clearUpstream();
      const stream = await stack.client().chat.completions.create({
        model: 'gpt-4o',
        messages: [{ role: 'user', content: original }],
        stream: true,
      });
      let text = '';
      let chunks = 0;
      for await (const c of stream) {
        chunks++;
        if (c.choices.length) text += c.choices[0].delta?.content ?? '';
      }
      assert.equal(text, original);
      assert.ok(chunks > 10, `expected many 1-char chunks, got ${chunks}`);
      const sent = await stack.lastUpstreamBody();
      assert.ok(!JSON.stringify(sent).includes(email));
      assert.ok(sent.messages[0].content.includes('[EMAIL_1]'), sent.messages[0].content);
      assert.ok(!sent.messages[0].content.includes('[EMAIL_2]'), sent.messages[0].content);
    }
  });

  test('streaming: two distinct emails map to [EMAIL_1] and [EMAIL_2] and both come back', { timeout: TEST_TIMEOUT_MS }, async () => {
    const a = randEmail();
    let b = randEmail();
    while (b === a) b = randEmail();
    const original = `cc ${a}, bcc ${b}.`;
    await stack.clearUpstream();
    const stream = await stack.client().chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: original }],
      stream: true,
    });
    let text = '';
    for await (const c of stream) if (c.choices.length) text += c.choices[0].delta?.content ?? '';
    assert.equal(text, original);
    const content = (await stack.lastUpstreamBody()).messages[0].content;
    assert.equal(content, 'cc [EMAIL_1], bcc [EMAIL_2].');
  });

  test('non-streaming: the answer equals the original text', { timeout: TEST_TIMEOUT_MS }, async () => {
    const email = randEmail();
    const resp = await stack.client().chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: `Hello ${email}!` }],
    });
    assert.equal(resp.choices[0].message.content, `Hello ${email}!`);
  });
});
