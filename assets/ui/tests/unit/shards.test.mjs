// The shard-map form turns into exactly the edits that differ from the stored map.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { changeOf } from '../../src/pages/shards.js';

const map = { version: 3, shards: [{ id: 0, weight: 1 }, { id: 1, weight: 1 }, { id: 2, weight: 2 }], pins: {}, draining: [2] };

test('only differences become edits', () => {
  const same = { count: 3, weights: { 0: 1, 1: 1, 2: 2 }, draining: { 0: false, 1: false, 2: true } };
  assert.deepEqual(changeOf(map, same), {});
  const edited = { count: '4', weights: { 0: '2.5', 1: 1, 2: 2 }, draining: { 0: false, 1: true, 2: false } };
  assert.deepEqual(changeOf(map, edited), { count: 4, weight: { 0: 2.5 }, drain: [1], undrain: [2] });
});

test('shards removed by the count carry no other edit', () => {
  const shrunk = { count: 2, weights: { 0: 1, 1: 1, 2: 5 }, draining: { 0: false, 1: false, 2: false } };
  assert.deepEqual(changeOf(map, shrunk), { count: 2 });
});
