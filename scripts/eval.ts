/**
 * npm run eval [-- --model DIR] [--decoder fp32|q8] [--limit N]
 *
 * Exact-match accuracy of a model folder on the tiny model's held-out questions, answered by
 * transformers.js (an implementation nobody here wrote) from the ONNX files on disk. Prints one
 * row per question kind and per language; the last line is the overall figure, `accuracy: 0.97`.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { KINDS, TINY_MODEL_DIR, isCorrect, loadHeldOut, readHeldOutImage } from './lib/heldout.ts';
import { createTransformersPeer } from './lib/transformers-peer.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: TINY_MODEL_DIR },
    decoder: { type: 'string', default: 'fp32' },
    limit: { type: 'string' },
  },
});
if (values.decoder !== 'fp32' && values.decoder !== 'q8') {
  throw new Error(`--decoder must be fp32 or q8, not ${values.decoder}`);
}

const modelDir = path.resolve(values.model);
const questions = loadHeldOut(modelDir).slice(0, values.limit ? Number(values.limit) : undefined);
const peer = await createTransformersPeer(modelDir, { decoderDtype: values.decoder });

const tally = new Map<string, { right: number; total: number }>();
const count = (key: string, right: boolean) => {
  const t = tally.get(key) ?? { right: 0, total: 0 };
  t.right += right ? 1 : 0;
  t.total += 1;
  tally.set(key, t);
};

const started = performance.now();
const misses: string[] = [];
for (const [i, q] of questions.entries()) {
  const { text } = await peer.answer(readHeldOutImage(q, modelDir), q.question);
  const right = isCorrect(q, text);
  for (const key of [q.kind, `${q.kind}/${q.lang}`, q.lang, 'all']) count(key, right);
  if (!right) misses.push(`${q.image} ${q.question} -> ${JSON.stringify(text.trim())} (expected ${JSON.stringify(q.answer)})`);
  if (process.stderr.isTTY) process.stderr.write(`\r${i + 1}/${questions.length}`);
}
if (process.stderr.isTTY) process.stderr.write('\n');
await peer.dispose();

const ratio = (key: string) => {
  const t = tally.get(key);
  return t ? (t.right / t.total).toFixed(2) : '-';
};
const seconds = (performance.now() - started) / 1000;
console.log(`model ${path.relative(process.cwd(), modelDir) || '.'}, decoder ${values.decoder}, transformers.js, ` +
  `${questions.length} questions in ${seconds.toFixed(0)} s`);
if (misses.length > 0) {
  console.log(`\nwrong answers (${misses.length}):`);
  for (const m of misses.slice(0, 20)) console.log(`  ${m}`);
  if (misses.length > 20) console.log(`  ... and ${misses.length - 20} more`);
}
console.log(`\n${'kind'.padEnd(10)}${'en'.padStart(7)}${'zh'.padStart(7)}${'both'.padStart(7)}${'n'.padStart(6)}`);
for (const kind of KINDS) {
  const n = tally.get(kind)?.total ?? 0;
  console.log(`${kind.padEnd(10)}${ratio(`${kind}/en`).padStart(7)}${ratio(`${kind}/zh`).padStart(7)}${ratio(kind).padStart(7)}${String(n).padStart(6)}`);
}
console.log(`${'all'.padEnd(10)}${ratio('en').padStart(7)}${ratio('zh').padStart(7)}${ratio('all').padStart(7)}${String(questions.length).padStart(6)}`);
console.log(`accuracy: ${ratio('all')}`);
