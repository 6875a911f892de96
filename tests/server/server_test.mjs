// End-to-end tests of `dsv2 serve` on the default model: starts the real server on a loopback port
// and talks to it with curl and with the official `openai` npm client (data/openai-client, installed
// by scripts/setup.sh). Usage: node server_test.mjs DSV2_BINARY SOURCE_DIR. Exits non-zero on failure.
// DSV2_SERVE_ARGS adds arguments to every `dsv2 serve` (e.g. "--device cuda" on a GPU machine).
import { spawn, execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [binary, sourceDir] = process.argv.slice(2);
const model = `${sourceDir}/models/default`;
const require = createRequire(`${sourceDir}/data/openai-client/package.json`);
const { default: OpenAI } = require('openai');

let failures = 0;
async function check(name, fn) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}\n     ${e.stack || e}`);
  }
}

// Starts `dsv2 serve` on a free port; resolves to { port, proc, stop }.
function startServer(extraArgs = []) {
  return new Promise((resolve, reject) => {
    const envArgs = (process.env.DSV2_SERVE_ARGS || '').split(' ').filter(Boolean);
    const proc = spawn(binary, ['serve', '--model', model, '--port', '0', '--threads', '1', ...envArgs, ...extraArgs], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    const timer = setTimeout(() => reject(new Error(`server did not start: ${err}`)), 20000);
    proc.stderr.on('data', (d) => {
      err += d;
      const m = err.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve({ port: Number(m[1]), proc, stop: () => new Promise((r) => { proc.on('exit', r); proc.kill('SIGTERM'); }) });
      }
    });
    proc.on('exit', (code) => reject(new Error(`server exited with ${code}: ${err}`)));
  });
}

// curl ARGS...; resolves to { status, body } (status from -w).
function curl(args) {
  return new Promise((resolve, reject) => {
    execFile('curl', ['-s', '-S', '-w', '\n%{http_code}', ...args], { maxBuffer: 64 << 20 }, (error, stdout) => {
      if (error && error.code !== 28) return reject(error);  // 28: --max-time reached (cancellation tests)
      const cut = stdout.lastIndexOf('\n');
      resolve({ status: Number(stdout.slice(cut + 1)), body: stdout.slice(0, cut) });
    });
  });
}
const post = (port, path, body, extra = []) =>
  curl([...extra, '-H', 'Content-Type: application/json', '--data-binary', typeof body === 'string' ? body : JSON.stringify(body),
        `http://127.0.0.1:${port}${path}`]);
const get = (port, path, extra = []) => curl([...extra, `http://127.0.0.1:${port}${path}`]);

// The SSE events of a streamed body: parsed JSON objects, and whether it ended with [DONE].
function sseEvents(body) {
  const lines = body.split('\n\n').filter((l) => l.length > 0);
  const done = lines.length > 0 && lines[lines.length - 1] === 'data: [DONE]';
  const events = lines.filter((l) => l !== 'data: [DONE]').map((l) => {
    assert.ok(l.startsWith('data: '), `not an SSE data line: ${l}`);
    return JSON.parse(l.slice(6));
  });
  return { events, done };
}

function metric(text, name) {
  const m = text.match(new RegExp(`^${name} ([0-9.e+-]+)$`, 'm'));
  assert.ok(m, `metric ${name} missing`);
  return Number(m[1]);
}

async function waitForIdle(port) {
  for (let i = 0; i < 100; i++) {
    const m = (await get(port, '/metrics')).body;
    if (metric(m, 'dsv2_running_sequences') === 0 && metric(m, 'dsv2_cache_blocks_used') === 0) return m;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('the server did not free its sequences and blocks');
}

function generateCli(prompt, n) {
  return new Promise((resolve, reject) => {
    execFile(binary, ['generate', '--model', model, '--prompt', prompt, '--max-new-tokens', String(n), '--threads', '1'],
      (error, stdout) => (error ? reject(error) : resolve(stdout.replace(/\n$/, ''))));
  });
}

// Small blocks so that the short test prompts fill whole blocks the prefix cache can share.
const server = await startServer(['--max-running', '4', '--cache-blocks', '512', '--block-size', '4']);
const { port } = server;
const base = `http://127.0.0.1:${port}`;
const prompts = ['The old house on the hill', 'In the morning the', 'She said that', 'The committee', 'It was a cold'];

await check('health and models', async () => {
  assert.equal((await get(port, '/health')).status, 200);
  const models = JSON.parse((await get(port, '/v1/models')).body);
  assert.equal(models.data[0].id, 'default');
});

await check('greedy completion equals dsv2 generate, with right usage', async () => {
  const want = await generateCli(prompts[0], 24);
  const r = await post(port, '/v1/completions', { model: 'default', prompt: prompts[0], max_tokens: 24, temperature: 0 });
  assert.equal(r.status, 200);
  const j = JSON.parse(r.body);
  assert.equal(j.choices[0].text, want);
  const ids = JSON.parse((await post(port, '/tokenize', { prompt: prompts[0] })).body);
  assert.equal(j.usage.prompt_tokens, ids.count);
  assert.ok(j.usage.completion_tokens >= 1 && j.usage.completion_tokens <= 24);
  assert.equal(j.usage.total_tokens, j.usage.prompt_tokens + j.usage.completion_tokens);
});

await check('streamed text equals the non-streamed text; ends with [DONE]; usage chunk', async () => {
  const body = { prompt: prompts[1], max_tokens: 20, temperature: 0 };
  const whole = JSON.parse((await post(port, '/v1/completions', body)).body);
  const r = await post(port, '/v1/completions', { ...body, stream: true, stream_options: { include_usage: true } }, ['-N']);
  const { events, done } = sseEvents(r.body);
  assert.ok(done);
  const text = events.filter((e) => e.choices.length).map((e) => e.choices[0].text).join('');
  assert.equal(text, whole.choices[0].text);
  const last = events[events.length - 1];
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, whole.usage.completion_tokens);
});

await check('stop strings are never emitted nor split across chunks', async () => {
  const whole = JSON.parse((await post(port, '/v1/completions', { prompt: prompts[0], max_tokens: 40, temperature: 0, ignore_eos: true })).body)
    .choices[0].text;
  const words = whole.split(' ').filter((w) => w.length > 1);
  const stop = ' ' + words[Math.min(3, words.length - 1)];
  const cut = whole.indexOf(stop);
  assert.ok(cut >= 0);
  const body = { prompt: prompts[0], max_tokens: 40, temperature: 0, ignore_eos: true, stop: [stop, 'zzzz'] };
  const plain = JSON.parse((await post(port, '/v1/completions', body)).body).choices[0];
  assert.equal(plain.text, whole.slice(0, cut));
  assert.equal(plain.finish_reason, 'stop');
  const { events } = sseEvents((await post(port, '/v1/completions', { ...body, stream: true }, ['-N'])).body);
  const pieces = events.map((e) => e.choices[0].text);
  assert.equal(pieces.join(''), whole.slice(0, cut));
  for (const p of pieces) assert.ok(!p.includes(stop.trim()) || !stop.trim().length, `chunk holds the stop string: ${p}`);
});

await check('concurrent clients get their solo results (curl)', async () => {
  const solo = [];
  for (const p of prompts) solo.push(JSON.parse((await post(port, '/v1/completions', { prompt: p, max_tokens: 16, temperature: 0 })).body).choices[0].text);
  const together = await Promise.all(prompts.concat(prompts).map((p) => post(port, '/v1/completions', { prompt: p, max_tokens: 16, temperature: 0 })));
  together.forEach((r, i) => assert.equal(JSON.parse(r.body).choices[0].text, solo[i % prompts.length]));
  await waitForIdle(port);
});

await check('n choices, seed, logprobs', async () => {
  const body = { prompt: prompts[2], max_tokens: 8, temperature: 1, seed: 11, n: 3, logprobs: 2 };
  const a = JSON.parse((await post(port, '/v1/completions', body)).body);
  const b = JSON.parse((await post(port, '/v1/completions', body)).body);
  assert.equal(a.choices.length, 3);
  assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text));
  const lp = a.choices[0].logprobs;
  assert.equal(lp.tokens.length, lp.token_logprobs.length);
  assert.ok(lp.token_logprobs.every((x) => x <= 0));
  assert.ok(Object.keys(lp.top_logprobs[0]).length >= 1);
  const tokens = a.choices.reduce((s, c) => s + c.logprobs.tokens.length, 0);
  assert.equal(a.usage.completion_tokens, tokens);
});

await check('choices sharing a prompt compute it once (n: 3)', async () => {
  const prompt = 'A prompt no other test sends, long enough to fill many blocks of four tokens: ' + 'tall green trees by the water, '.repeat(6);
  const count = JSON.parse((await post(port, '/tokenize', { prompt })).body).count;
  const shared = Math.floor((count - 1) / 4) * 4;  // full blocks before the last token (block size 4)
  const before = await waitForIdle(port);
  const r = JSON.parse((await post(port, '/v1/completions', { prompt, max_tokens: 4, n: 3, temperature: 0 })).body);
  const m = await waitForIdle(port);
  const prefilled = metric(m, 'dsv2_engine_prefill_tokens_total') - metric(before, 'dsv2_engine_prefill_tokens_total');
  assert.equal(prefilled, count + 2 * (count - shared));
  assert.equal(r.usage.prompt_tokens_details.cached_tokens, 2 * shared);
  assert.equal(new Set(r.choices.map((c) => c.text)).size, 1);
});

await check('tokenize / detokenize round trip', async () => {
  const t = JSON.parse((await post(port, '/tokenize', { prompt: 'Hello there', add_special_tokens: false })).body);
  const d = JSON.parse((await post(port, '/detokenize', { tokens: t.tokens })).body);
  assert.equal(d.prompt, 'Hello there');
});

await check('every bad request is a 4xx with a JSON error, and the server keeps serving', async () => {
  const bad = [
    ['/v1/completions', '{"prompt": "x"'],
    ['/v1/completions', '[1, 2]'],
    ['/v1/completions', '{"prompt": 5}'],
    ['/v1/completions', '{"prompt": ""}'],
    ['/v1/completions', '{"prompt": "x", "max_tokens": "ten"}'],
    ['/v1/completions', '{"prompt": "x", "max_tokens": 0}'],
    ['/v1/completions', '{"prompt": "x", "max_tokens": 100000}'],
    ['/v1/completions', JSON.stringify({ prompt: 'word '.repeat(1100) })],
    ['/v1/completions', JSON.stringify({ prompt: Array(1024).fill(5) })],
    ['/v1/completions', '{"prompt": [99999]}'],
    ['/v1/completions', '{"prompt": [-1]}'],
    ['/v1/completions', '{"prompt": "x", "n": 0}'],
    ['/v1/completions', '{"prompt": "x", "n": 17}'],
    ['/v1/completions', '{"prompt": "x", "logprobs": 6}'],
    ['/v1/completions', '{"prompt": "x", "temperature": -1}'],
    ['/v1/completions', '{"prompt": "x", "top_p": 0}'],
    ['/v1/completions', '{"prompt": "x", "presence_penalty": 3}'],
    ['/v1/completions', '{"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}'],
    ['/v1/completions', '{"prompt": "x", "stop": 7}'],
    ['/v1/completions', '{"prompt": "x", "stream": "yes"}'],
    ['/v1/completions', '{"prompt": "x", "stream_options": {"include_usage": true}}'],
    ['/v1/completions', '{"prompt": "x", "model": "gpt-4"}'],
    ['/v1/completions', '[' .repeat(100000)],
    ['/v1/chat/completions', '{"messages": []}'],
    ['/v1/chat/completions', '{"messages": [{"content": "hi"}]}'],
    ['/v1/chat/completions', '{"messages": [{"role": "wizard", "content": "hi"}]}'],
    ['/v1/chat/completions', '{"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3}'],
    ['/v1/chat/completions', '{"messages": [{"role": "user", "content": "hi"}], "logprobs": true, "top_logprobs": 21}'],
    ['/detokenize', '{"tokens": [1e9]}'],
    ['/tokenize', '{"prompt": 3}'],
  ];
  for (const [path, body] of bad) {
    const r = await curl(['-H', 'Content-Type: application/json', '--data-binary', body, `${base}${path}`]);
    assert.ok(r.status >= 400 && r.status < 500, `${path} ${body.slice(0, 60)} -> ${r.status} ${r.body}`);
    const j = JSON.parse(r.body);
    assert.equal(typeof j.error.message, 'string', r.body);
  }
  // Invalid UTF-8 bytes and a body over the 4 MiB limit, sent from files.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsv2-server-test-'));
  fs.writeFileSync(path.join(dir, 'utf8.json'), Buffer.concat([Buffer.from('{"prompt": "a'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}')]));
  fs.writeFileSync(path.join(dir, 'huge.json'), `{"prompt": "${'a'.repeat(5 << 20)}"}`);
  const utf8 = await curl(['-H', 'Content-Type: application/json', '--data-binary', `@${dir}/utf8.json`, `${base}/v1/completions`]);
  assert.equal(utf8.status, 400, utf8.body);
  assert.match(JSON.parse(utf8.body).error.message, /UTF-8/);
  const huge = await curl(['-H', 'Content-Type: application/json', '--data-binary', `@${dir}/huge.json`, `${base}/v1/completions`]);
  fs.rmSync(dir, { recursive: true });
  assert.equal(huge.status, 413);
  assert.equal((await get(port, '/nope')).status, 404);
  assert.equal((await get(port, '/health')).status, 200);
});

await check('a client that disconnects mid-stream frees its sequence and blocks at once', async () => {
  const before = metric((await get(port, '/metrics')).body, 'dsv2_generation_tokens_total');
  // 16 choices of 1000 tokens take seconds on the default model (one choice can finish within the
  // client's 0.3 s); the client leaves after 0.3 s.
  await post(port, '/v1/completions', { prompt: prompts[3], max_tokens: 1000, n: 16, ignore_eos: true, stream: true },
             ['-N', '--max-time', '0.3']);
  const start = Date.now();
  const m = await waitForIdle(port);
  assert.ok(Date.now() - start < 1500, 'blocks were not freed promptly');
  assert.equal(metric(m, 'dsv2_generation_tokens_total'), before);  // the cancelled request never finished
  assert.ok(metric(m, 'dsv2_cache_blocks_free') === metric(m, 'dsv2_cache_blocks_total'));
});

await check('a non-streaming client that disconnects frees its sequences and blocks at once', async () => {
  const before = (await waitForIdle(port));
  // 4 x 1000 tokens take seconds; the client leaves after 0.3 s, and its request is cancelled then.
  await post(port, '/v1/completions', { prompt: prompts[3], max_tokens: 1000, n: 4, ignore_eos: true }, ['--max-time', '0.3']);
  const start = Date.now();
  const m = await waitForIdle(port);
  assert.ok(Date.now() - start < 1500, 'blocks were not freed promptly');
  assert.equal(metric(m, 'dsv2_generation_tokens_total'), metric(before, 'dsv2_generation_tokens_total'));
  const sampled = metric(m, 'dsv2_engine_generated_tokens_total') - metric(before, 'dsv2_engine_generated_tokens_total');
  assert.ok(sampled < 4000, `the request ran to its end (${sampled} tokens)`);
});

await check('metrics: counters, gauges, histograms', async () => {
  const m = (await get(port, '/metrics')).body;
  for (const name of ['dsv2_prompt_tokens_total', 'dsv2_generation_tokens_total', 'dsv2_queue_depth', 'dsv2_running_sequences',
    'dsv2_cache_blocks_used', 'dsv2_cache_blocks_free', 'dsv2_prefix_cache_hit_rate', 'dsv2_time_to_first_token_seconds_count',
    'dsv2_inter_token_latency_seconds_count', 'dsv2_engine_prefill_tokens_total', 'dsv2_engine_generated_tokens_total',
    'process_resident_memory_bytes']) metric(m, name);
  assert.ok(metric(m, 'process_resident_memory_bytes') > 1e6);
  assert.ok(metric(m, 'dsv2_engine_generated_tokens_total') > metric(m, 'dsv2_generation_tokens_total'), 'cancelled requests sampled tokens too');
  assert.ok(metric(m, 'dsv2_prefix_cache_hit_rate') > 0, 'repeated prompts should hit the prefix cache');
  assert.match(m, /dsv2_requests_total\{endpoint="\/v1\/completions",status="400"\} \d+/);
});

const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0 });

await check('openai client: chat, non-streaming and streaming agree', async () => {
  const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Tell me about the old house.' }];
  const whole = await client.chat.completions.create({ model: 'default', messages, max_tokens: 16, temperature: 0 });
  assert.equal(whole.choices[0].message.role, 'assistant');
  const stream = await client.chat.completions.create({ model: 'default', messages, max_tokens: 16, temperature: 0, stream: true,
    stream_options: { include_usage: true } });
  let text = '';
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.choices.length) text += chunk.choices[0].delta.content ?? '';
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, whole.choices[0].message.content);
  assert.deepEqual(usage.completion_tokens, whole.usage.completion_tokens);
  assert.deepEqual(usage.prompt_tokens, whole.usage.prompt_tokens);
});

await check('openai client: completions, concurrent, with logprobs', async () => {
  const results = await Promise.all(prompts.map((p) => client.completions.create({ model: 'default', prompt: p, max_tokens: 12, temperature: 0 })));
  const again = await client.completions.create({ model: 'default', prompt: prompts[4], max_tokens: 12, temperature: 0 });
  assert.equal(results[4].choices[0].text, again.choices[0].text);
  const chat = await client.chat.completions.create({ model: 'default', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4,
    temperature: 0, logprobs: true, top_logprobs: 3 });
  assert.equal(chat.choices[0].logprobs.content[0].top_logprobs.length, 3);
});

await check('a long non-streaming answer is spaces, then the JSON (curl and the openai client parse it alike)', async () => {
  const body = { model: 'default', prompt: prompts[2], max_tokens: 500, n: 4, temperature: 0, ignore_eos: true };
  const r = await post(port, '/v1/completions', body);
  assert.equal(r.status, 200);
  assert.match(r.body, /^ +\{/);  // a space per 150 ms while it ran
  const viaClient = await client.completions.create(body);
  assert.deepEqual(viaClient.choices.map((c) => c.text), JSON.parse(r.body).choices.map((c) => c.text));
  assert.equal(viaClient.usage.completion_tokens, 2000);
});

await check('openai client: errors surface as APIError with the status', async () => {
  await assert.rejects(client.completions.create({ model: 'default', prompt: 'x', max_tokens: 100000 }), (e) => e.status === 400);
  await assert.rejects(client.chat.completions.create({ model: 'default', messages: [], max_tokens: 3 }), (e) => e.status === 400);
  await assert.rejects(client.completions.create({ model: 'nope', prompt: 'x' }), (e) => e.status === 404);
});

await check('openai client: aborting a stream frees the sequence', async () => {
  const controller = new AbortController();
  const stream = await client.completions.create({ model: 'default', prompt: prompts[0], max_tokens: 1000, ignore_eos: true, stream: true },
    { signal: controller.signal });
  let n = 0;
  try {
    for await (const chunk of stream) {
      if (++n === 5) controller.abort();  // ends the iteration (the client may throw or just stop)
    }
  } catch (e) {
    assert.ok(e instanceof Error);
  }
  assert.ok(n >= 5 && n < 100, `read ${n} chunks`);
  await waitForIdle(port);
});

await check('openai client: aborting a non-streaming request frees its sequence', async () => {
  const before = await waitForIdle(port);
  const controller = new AbortController();
  const request = client.completions.create({ model: 'default', prompt: prompts[1], max_tokens: 1000, n: 4, ignore_eos: true },
    { signal: controller.signal });
  setTimeout(() => controller.abort(), 300);
  await assert.rejects(request);
  const m = await waitForIdle(port);
  const sampled = metric(m, 'dsv2_engine_generated_tokens_total') - metric(before, 'dsv2_engine_generated_tokens_total');
  assert.ok(sampled < 4000, `the request ran to its end (${sampled} tokens)`);
  assert.equal(metric(m, 'dsv2_generation_tokens_total'), metric(before, 'dsv2_generation_tokens_total'));
});

await server.stop();

await check('API key: 401 without the right bearer token', async () => {
  const keyed = await startServer(['--api-key', 'sesame']);
  try {
    const url = `http://127.0.0.1:${keyed.port}/v1/models`;
    assert.equal((await curl([url])).status, 401);
    assert.equal(JSON.parse((await curl([url])).body).error.type, 'authentication_error');
    assert.equal((await curl(['-H', 'Authorization: Bearer wrong', url])).status, 401);
    assert.equal((await curl(['-H', 'Authorization: Bearer sesame', url])).status, 200);
    const ok = new OpenAI({ baseURL: `http://127.0.0.1:${keyed.port}/v1`, apiKey: 'sesame', maxRetries: 0 });
    assert.equal((await ok.models.list()).data[0].id, 'default');
    const wrong = new OpenAI({ baseURL: `http://127.0.0.1:${keyed.port}/v1`, apiKey: 'nope', maxRetries: 0 });
    await assert.rejects(wrong.models.list(), (e) => e.status === 401);
  } finally {
    await keyed.stop();
  }
});

console.log(failures ? `${failures} FAILED` : 'all passed');
process.exit(failures ? 1 : 0);
