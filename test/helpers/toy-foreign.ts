/**
 * A toy foreign record format for store tests (a JSON array of values per
 * batch), standing in for Kafka's: the store keeps such batches whole and
 * reads their records through it.
 */

import assert from "node:assert/strict";
import type { ForeignRecords } from "../../src/store/log.js";

export const TOY_FORMAT = 7;

export const toy: ForeignRecords = {
  async decode(format, bytes, firstSeq, time, subject) {
    assert.equal(format, TOY_FORMAT);
    const values = JSON.parse(bytes.toString()) as string[];
    return values.map((v, i) => ({ seq: firstSeq + i, time, subject, key: null, headers: null, data: Buffer.from(v) }));
  },
  // A value "name@ms" carries its own time, as a Kafka record its timestamp; a batch without any carries none.
  newestRecordTime(format, bytes) {
    assert.equal(format, TOY_FORMAT);
    const times = (JSON.parse(bytes.toString()) as string[]).filter((v) => v.includes("@")).map((v) => Number(v.slice(v.indexOf("@") + 1)));
    return times.length === 0 ? null : Math.max(...times);
  },
};
