// The event-stream parser: chunk boundaries anywhere, CRLF/LF/CR, comments, ids kept.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SseParser } from '../../src/sse.js';

const stream = 'id:evt_1\nevent:session.qr\ndata:{"a":1}\n\n: keep-alive\n\r\nid: evt_2\r\nevent: session.status\r\ndata: {"b":\r\ndata: 2}\r\n\r\ndata:no id\r\r\n';

test('events survive any chunking', () => {
  for (let size = 1; size <= stream.length; size++) {
    const got = [];
    const p = new SseParser((e) => got.push(e));
    for (let i = 0; i < stream.length; i += size) p.push(stream.slice(i, i + size));
    assert.deepEqual(got, [
      { id: 'evt_1', event: 'session.qr', data: '{"a":1}' },
      { id: 'evt_2', event: 'session.status', data: '{"b":\n2}' },
      { id: 'evt_2', event: 'message', data: 'no id' },
    ], `chunk size ${size}`);
  }
});

test('an event without data is not dispatched', () => {
  const got = [];
  const p = new SseParser((e) => got.push(e));
  p.push('event:x\n\nid:1\n\n');
  assert.deepEqual(got, []);
});
