#!/usr/bin/env node
// Load benchmark for `dsv2 serve`: N concurrent clients send streaming completions for a bounded
// time; reports requests/s, output tokens/s, time to first token and inter-token latency
// percentiles, failures, and the server's cache blocks and resident memory after each level. As a
// soak test (one level for a long time, e.g. --concurrency 8 --seconds 600), the last line compares
// the server's resident memory before and after; the script exits 1 if any cache block is still
// used after the run.
//
//   node scripts/bench_serve.mjs --url http://127.0.0.1:8000 [--concurrency 1,2,4,8] [--seconds 10]
//        [--max-tokens 64] [--prompt-words 32] [--model default]
import process from 'node:process';

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const url = option('url', 'http://127.0.0.1:8000');
const levels = option('concurrency', '1,2,4,8').split(',').map(Number);
const seconds = Number(option('seconds', '10'));
const maxTokens = Number(option('max-tokens', '64'));
const promptWords = Number(option('prompt-words', '32'));
const model = option('model', 'default');
for (const [name, v] of [['seconds', seconds], ['max-tokens', maxTokens], ['prompt-words', promptWords]])
  if (!(v > 0)) throw new Error(`--${name} must be > 0`);
if (levels.some((c) => !(c >= 1))) throw new Error('--concurrency must be a list of integers >= 1');

const words = 'the old house on the hill was quiet in the morning and the men walked along the river to the town'.split(' ');
function prompt(client, i) {
  const out = [];
  for (let k = 0; k < promptWords; k++) out.push(words[(client * 7 + i * 3 + k * 5) % words.length]);
  return out.join(' ');
}

// One streaming request; returns { ttft, gaps: [...], tokens } in seconds, or throws.
async function one(client, i) {
  const start = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model, prompt: prompt(client, i), max_tokens: maxTokens, temperature: 0.8, seed: i, ignore_eos: true,
      stream: true, stream_options: { include_usage: true } }),
  });
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const decoder = new TextDecoder();
  let buffer = '', last = start, ttft = null, tokens = 0, done = false;
  const gaps = [];
  for await (const bytes of res.body) {
    buffer += decoder.decode(bytes, { stream: true });
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (event === 'data: [DONE]') { done = true; continue; }
      const chunk = JSON.parse(event.slice(6));
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
      if (!chunk.choices.length || chunk.choices[0].finish_reason) continue;
      const now = performance.now();
      if (ttft === null) ttft = (now - start) / 1000;
      else gaps.push((now - last) / 1000);
      last = now;
    }
  }
  if (!done) throw new Error('the stream ended without [DONE]');
  return { ttft, gaps, tokens };
}

const pct = (xs, p) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const ms = (x) => (x * 1000).toFixed(1);

async function metrics() {
  const text = await (await fetch(`${url}/metrics`)).text();
  const read = (name) => Number((text.match(new RegExp(`^${name} (\\S+)$`, 'm')) || [])[1]);
  return { used: read('dsv2_cache_blocks_used'), free: read('dsv2_cache_blocks_free'), total: read('dsv2_cache_blocks_total'),
    preemptions: read('dsv2_preemptions_total'), rssMB: read('process_resident_memory_bytes') / 1e6 };
}
const start = await metrics();

console.log(`# ${url}, ${seconds} s per level, prompt ~${promptWords} words, ${maxTokens} output tokens per request`);
console.log('concurrency  requests  failed  req/s   out tok/s  ttft p50/p90/p99 ms      itl p50/p90/p99 ms    blocks used after  RSS MB after');
for (const c of levels) {
  const deadline = performance.now() + seconds * 1000;
  const ttfts = [], gaps = [];
  let requests = 0, failed = 0, tokens = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: c }, async (_, client) => {
    for (let i = 0; performance.now() < deadline; i++) {
      try {
        const r = await one(client, i);
        requests++;
        tokens += r.tokens;
        if (r.ttft !== null) ttfts.push(r.ttft);  // null: no text came (ids past the tokenizer, random models)
        gaps.push(...r.gaps);
      } catch (e) {
        failed++;
        if (failed <= 3) console.error(`request failed: ${e.message}`);
      }
    }
  }));
  const elapsed = (performance.now() - t0) / 1000;
  const m = await metrics();
  console.log(`${String(c).padStart(11)}  ${String(requests).padStart(8)}  ${String(failed).padStart(6)}  ${(requests / elapsed).toFixed(2).padStart(6)}` +
    `  ${(tokens / elapsed).toFixed(1).padStart(9)}  ${[pct(ttfts, 50), pct(ttfts, 90), pct(ttfts, 99)].map(ms).join('/').padEnd(22)}` +
    `  ${[pct(gaps, 50), pct(gaps, 90), pct(gaps, 99)].map(ms).join('/').padEnd(20)}  ${`${m.used} of ${m.total}`.padEnd(17)}` +
    `  ${m.rssMB.toFixed(1)}`);
}
const end = await metrics();
console.log(`# server resident memory ${start.rssMB.toFixed(1)} MB before, ${end.rssMB.toFixed(1)} MB after; ` +
  `cache blocks used after: ${end.used} of ${end.total}`);
if (end.used !== 0) {
  console.error('cache blocks are still in use after every request finished');
  process.exit(1);
}
