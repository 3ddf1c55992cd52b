/**
 * The process the crash tests kill: opens a file log, appends without end,
 * and prints "ack <seq>" for every acknowledged append. The content of each
 * record is a function of its sequence, so the parent can check it after
 * recovery. In "churn" mode it also deletes two of every three records once
 * acknowledged (printing "del <seq>" when the delete is durable), on small
 * segments, so that compaction rewrites files all the time.
 */

import { FileLog } from "../../src/store/file-log.js";
import { expectedRecord } from "./store-model.js";

const dir = process.argv[2];
// The test runner loads every file under test/: without a directory this is not the crash test's child.
if (dir === undefined || process.env.NAGARE_STORE_CHILD !== "1") process.exit(0);
const churn = process.argv[3] === "churn";
const log = await FileLog.open({ dir, sync: "always", maxSegmentBytes: churn ? 16 * 1024 : 256 * 1024 });
let next = log.state().lastSeq + 1;
let out = "";
let compactions = 0;
const flush = (): void => {
  if (log.io.compactions !== compactions) {
    compactions = log.io.compactions;
    out += `compactions ${compactions}\n`;
  }
  if (out.length > 0) {
    process.stdout.write(out);
    out = "";
  }
};
setInterval(flush, 5);
process.stdout.write(`ready ${next - 1}\n`);

// Keep many appends in flight so that group commit forms real batches.
const INFLIGHT = 64;
let inflight = 0;
const pump = (): void => {
  while (inflight < INFLIGHT) {
    const want = next++;
    inflight++;
    log.append(expectedRecord(want), (err, seq) => {
      inflight--;
      if (err) {
        process.stderr.write(`append failed: ${err.message}\n`);
        process.exit(3);
      }
      if (seq !== want) {
        process.stderr.write(`append of record ${want} got seq ${seq}\n`);
        process.exit(4);
      }
      out += `ack ${seq}\n`;
      if (churn && seq % 3 !== 0) {
        log.delete(seq).then(
          (removed) => {
            if (removed) out += `del ${seq}\n`;
          },
          (e: Error) => {
            process.stderr.write(`delete failed: ${e.message}\n`);
            process.exit(5);
          },
        );
      }
      pump();
    });
  }
};
pump();
